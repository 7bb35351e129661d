// Cron expressions for scheduled failback: parsing, errors that name the field, next times.
#include <gtest/gtest.h>

#include <vmha/config/cron.h>

using namespace vmha::config;

namespace {
CronSchedule cron(const char* text) {
    auto c = CronSchedule::parse(text);
    EXPECT_TRUE(c) << text << ": " << (c ? "" : c.error().message);
    return *c;
}
std::string next(const char* text, CivilMinute from) {
    auto n = cron(text).next_after(from);
    return n ? n->to_string() : "never";
}
}  // namespace

TEST(Cron, FieldErrorsNameTheField) {
    EXPECT_EQ(CronSchedule::parse("0 25 * * *").error().message,
              "cron field 2 (hour) \"25\": 25 is out of range 0-23");
    EXPECT_EQ(CronSchedule::parse("0 2 * * funday").error().message,
              "cron field 5 (day of week) \"funday\": \"funday\" is not a number or a name");
    EXPECT_EQ(CronSchedule::parse("*/0 * * * *").error().message,
              "cron field 1 (minute) \"*/0\": step \"0\" must be 1 to 60");
    EXPECT_EQ(CronSchedule::parse("0 5-3 * * *").error().message,
              "cron field 2 (hour) \"5-3\": range 5-3 runs backwards");
    EXPECT_EQ(CronSchedule::parse("0 2 * *").error().message,
              "cron expression \"0 2 * *\" has 4 fields; it needs 5 (minute hour day-of-month "
              "month day-of-week)");
    EXPECT_EQ(CronSchedule::parse("0 2 0 * *").error().message,
              "cron field 3 (day of month) \"0\": 0 is out of range 1-31");
    EXPECT_EQ(CronSchedule::parse("1,,2 * * * *").error().message,
              "cron field 1 (minute) \"1,,2\" has an empty list item");
    EXPECT_FALSE(CronSchedule::parse("@sometimes"));
}

TEST(Cron, WeekdayOfKnownDates) {
    EXPECT_EQ(weekday(2026, 11, 26), 4);  // a Thursday
    EXPECT_EQ(weekday(2000, 1, 1), 6);    // a Saturday
    EXPECT_EQ(weekday(2024, 2, 29), 4);
}

TEST(Cron, NextTimes) {
    const CivilMinute thu{2026, 11, 26, 13, 42};
    EXPECT_EQ(next("0 2 * * *", thu), "2026-11-27 02:00");
    EXPECT_EQ(next("0 2 * * sun", thu), "2026-11-29 02:00");
    EXPECT_EQ(next("0 2 * * 7", thu), "2026-11-29 02:00");  // 7 is Sunday too
    EXPECT_EQ(next("*/15 * * * *", thu), "2026-11-26 13:45");
    EXPECT_EQ(next("42 13 * * *", thu), "2026-11-27 13:42");  // strictly after
    EXPECT_EQ(next("0 8-18/2 * * mon-fri", thu), "2026-11-26 14:00");
    EXPECT_EQ(next("30 4 1 jan *", thu), "2027-01-01 04:30");
    EXPECT_EQ(next("@monthly", thu), "2026-12-01 00:00");
    EXPECT_EQ(next("@hourly", thu), "2026-11-26 14:00");
    EXPECT_EQ(next("0 0 29 2 *", thu), "2028-02-29 00:00");  // next leap day
    EXPECT_EQ(next("0 0 30 2 *", thu), "never");
    EXPECT_EQ(next("59 23 31 12 *", CivilMinute{2026, 12, 31, 23, 59}), "2027-12-31 23:59");
}

TEST(Cron, DayOfMonthOrDayOfWeekWhenBothRestricted) {
    // Vixie cron: the 13th of the month, or any Friday.
    const auto c = cron("0 0 13 * fri");
    EXPECT_EQ(c.next_after({2026, 11, 26, 13, 42})->to_string(), "2026-11-27 00:00");  // Friday
    EXPECT_EQ(c.next_after({2026, 12, 11, 1, 0})->to_string(), "2026-12-13 00:00");    // Sunday 13th
    EXPECT_TRUE(c.matches({2026, 12, 13, 0, 0}));
    EXPECT_FALSE(c.matches({2026, 12, 14, 0, 0}));
}
