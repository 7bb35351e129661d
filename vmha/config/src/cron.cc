#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <vector>

#include <fmt/format.h>

#include <vmha/config/cron.h>

namespace vmha::config {
namespace {

struct FieldSpec {
    const char* name;
    int min;
    int max;
    const char* const* names;  // optional symbolic names, index = value - names_base
    int names_base;
    int names_count;
};

constexpr const char* month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr const char* day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

constexpr std::array<FieldSpec, 5> fields = {{
    {"minute", 0, 59, nullptr, 0, 0},
    {"hour", 0, 23, nullptr, 0, 0},
    {"day of month", 1, 31, nullptr, 0, 0},
    {"month", 1, 12, month_names, 1, 12},
    {"day of week", 0, 7, day_names, 0, 7},
}};

Error bad(std::string reason) { return Error(errc::invalid_argument, std::move(reason)); }

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); });
    return out;
}

Result<int> parse_value(std::string_view token, const FieldSpec& spec, std::size_t index,
                        std::string_view field_text) {
    const std::string t = lower(token);
    for (int i = 0; i < spec.names_count; ++i) {
        if (t == spec.names[i]) return spec.names_base + i;
    }
    int value = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size()) {
        return bad(fmt::format("cron field {} ({}) \"{}\": \"{}\" is not a number{}", index + 1,
                               spec.name, field_text, token,
                               spec.names_count ? " or a name" : ""));
    }
    if (value < spec.min || value > spec.max) {
        return bad(fmt::format("cron field {} ({}) \"{}\": {} is out of range {}-{}", index + 1,
                               spec.name, field_text, value, spec.min, spec.max));
    }
    return value;
}

// Parses one field into the set of values it selects.
Result<std::vector<int>> parse_field(std::string_view text, std::size_t index) {
    const FieldSpec& spec = fields[index];
    std::vector<int> values;
    std::string_view rest = text;
    while (true) {
        const auto comma = rest.find(',');
        const std::string_view item = rest.substr(0, comma);
        if (item.empty()) {
            return bad(fmt::format("cron field {} ({}) \"{}\" has an empty list item", index + 1,
                                   spec.name, text));
        }
        std::string_view range = item;
        int step = 1;
        if (const auto slash = item.find('/'); slash != std::string_view::npos) {
            range = item.substr(0, slash);
            const std::string_view step_text = item.substr(slash + 1);
            const auto [end, ec] =
                std::from_chars(step_text.data(), step_text.data() + step_text.size(), step);
            if (step_text.empty() || ec != std::errc() ||
                end != step_text.data() + step_text.size() || step < 1 ||
                step > spec.max - spec.min + 1) {
                return bad(fmt::format("cron field {} ({}) \"{}\": step \"{}\" must be 1 to {}",
                                       index + 1, spec.name, text, step_text,
                                       spec.max - spec.min + 1));
            }
        }
        int lo = 0;
        int hi = 0;
        if (range == "*") {
            lo = spec.min;
            hi = spec.max;
        } else if (const auto dash = range.find('-'); dash != std::string_view::npos) {
            auto a = parse_value(range.substr(0, dash), spec, index, text);
            if (!a) return std::move(a).error();
            auto b = parse_value(range.substr(dash + 1), spec, index, text);
            if (!b) return std::move(b).error();
            lo = *a;
            hi = *b;
            if (lo > hi) {
                return bad(fmt::format("cron field {} ({}) \"{}\": range {}-{} runs backwards",
                                       index + 1, spec.name, text, lo, hi));
            }
        } else {
            auto v = parse_value(range, spec, index, text);
            if (!v) return std::move(v).error();
            lo = *v;
            hi = (item.find('/') != std::string_view::npos) ? spec.max : *v;
        }
        for (int v = lo; v <= hi; v += step) values.push_back(v);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    return values;
}

bool is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return (m == 2 && is_leap(y)) ? 29 : days[m - 1];
}

}  // namespace

std::string CivilMinute::to_string() const {
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}", year, month, day, hour, minute);
}

int weekday(int y, int m, int d) {
    // Sakamoto's method.
    static constexpr int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
    if (m < 3) y -= 1;
    return (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;
}

Result<CronSchedule> CronSchedule::parse(std::string_view text) {
    std::string expr(text);
    const std::string low = lower(text);
    if (low == "@yearly" || low == "@annually") expr = "0 0 1 1 *";
    else if (low == "@monthly") expr = "0 0 1 * *";
    else if (low == "@weekly") expr = "0 0 * * 0";
    else if (low == "@daily" || low == "@midnight") expr = "0 0 * * *";
    else if (low == "@hourly") expr = "0 * * * *";
    else if (!low.empty() && low[0] == '@') {
        return bad(fmt::format("cron shorthand \"{}\" is unknown; use @yearly, @monthly, @weekly, "
                               "@daily or @hourly",
                               text));
    }
    std::vector<std::string_view> parts;
    std::string_view rest = expr;
    while (!rest.empty()) {
        while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.front())) != 0) rest.remove_prefix(1);
        if (rest.empty()) break;
        std::size_t n = 0;
        while (n < rest.size() && std::isspace(static_cast<unsigned char>(rest[n])) == 0) ++n;
        parts.push_back(rest.substr(0, n));
        rest.remove_prefix(n);
    }
    if (parts.size() != 5) {
        return bad(fmt::format("cron expression \"{}\" has {} field{}; it needs 5 (minute hour "
                               "day-of-month month day-of-week)",
                               text, parts.size(), parts.size() == 1 ? "" : "s"));
    }
    CronSchedule c;
    c.text_ = std::string(text);
    for (std::size_t i = 0; i < 5; ++i) {
        auto values = parse_field(parts[i], i);
        if (!values) return std::move(values).error();
        for (const int v : *values) {
            switch (i) {
                case 0: c.minutes_.set(static_cast<std::size_t>(v)); break;
                case 1: c.hours_.set(static_cast<std::size_t>(v)); break;
                case 2: c.days_.set(static_cast<std::size_t>(v)); break;
                case 3: c.months_.set(static_cast<std::size_t>(v)); break;
                default: c.weekdays_.set(static_cast<std::size_t>(v % 7)); break;
            }
        }
    }
    c.day_restricted_ = parts[2].front() != '*';
    c.weekday_restricted_ = parts[4].front() != '*';
    return c;
}

bool CronSchedule::day_matches(int year, int month, int day) const {
    const bool dom = days_.test(static_cast<std::size_t>(day));
    const bool dow = weekdays_.test(static_cast<std::size_t>(weekday(year, month, day)));
    if (day_restricted_ && weekday_restricted_) return dom || dow;
    if (day_restricted_) return dom;
    if (weekday_restricted_) return dow;
    return true;
}

bool CronSchedule::matches(const CivilMinute& t) const {
    return minutes_.test(static_cast<std::size_t>(t.minute)) &&
           hours_.test(static_cast<std::size_t>(t.hour)) &&
           months_.test(static_cast<std::size_t>(t.month)) && day_matches(t.year, t.month, t.day);
}

std::optional<CivilMinute> CronSchedule::next_after(const CivilMinute& t) const {
    for (int y = t.year; y <= t.year + 8; ++y) {
        for (int m = (y == t.year ? t.month : 1); m <= 12; ++m) {
            if (!months_.test(static_cast<std::size_t>(m))) continue;
            const bool this_month = y == t.year && m == t.month;
            for (int d = this_month ? t.day : 1; d <= days_in_month(y, m); ++d) {
                if (!day_matches(y, m, d)) continue;
                const bool today = this_month && d == t.day;
                for (int h = today ? t.hour : 0; h < 24; ++h) {
                    if (!hours_.test(static_cast<std::size_t>(h))) continue;
                    for (int mi = (today && h == t.hour) ? t.minute + 1 : 0; mi < 60; ++mi) {
                        if (minutes_.test(static_cast<std::size_t>(mi))) {
                            return CivilMinute{y, m, d, h, mi};
                        }
                    }
                }
            }
        }
    }
    return std::nullopt;
}

}  // namespace vmha::config
