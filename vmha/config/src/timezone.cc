#include <algorithm>
#include <array>
#include <charconv>
#include <cctype>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include <vmha/config/timezone.h>

namespace vmha::config {
namespace {

using std::chrono::days;
using std::chrono::seconds;

constexpr std::int64_t kDay = 86400;

Error bad_rule(std::string_view rule, std::string_view why) {
    return Error(errc::invalid_argument, fmt::format("time zone rule \"{}\": {}", rule, why));
}

std::int64_t days_from_civil(int y, int m, int d) {
    using namespace std::chrono;
    return sys_days{year{y} / month{static_cast<unsigned>(m)} / day{static_cast<unsigned>(d)}}
        .time_since_epoch()
        .count();
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
    static constexpr std::array<int, 12> n = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : n[static_cast<std::size_t>(m - 1)];
}

int year_of(std::int64_t local_seconds) {
    using namespace std::chrono;
    const year_month_day ymd{sys_days{days{local_seconds >= 0 ? local_seconds / kDay
                                                             : (local_seconds - kDay + 1) / kDay}}};
    return static_cast<int>(ymd.year());
}

}  // namespace

// ---- civil times -----------------------------------------------------------------------

LocalSeconds CivilTime::local() const {
    return LocalSeconds{seconds{days_from_civil(year, month, day) * kDay + hour * 3600 + minute * 60 + second}};
}

CivilTime CivilTime::from(LocalSeconds t) {
    using namespace std::chrono;
    const auto d = floor<days>(t);
    const year_month_day ymd{sys_days{d.time_since_epoch()}};
    const auto rest = (t - d).count();
    return {static_cast<int>(ymd.year()), static_cast<int>(static_cast<unsigned>(ymd.month())),
            static_cast<int>(static_cast<unsigned>(ymd.day())), static_cast<int>(rest / 3600),
            static_cast<int>(rest / 60 % 60), static_cast<int>(rest % 60)};
}

std::string CivilTime::to_string() const {
    auto s = fmt::format("{:04}-{:02}-{:02} {:02}:{:02}", year, month, day, hour, minute);
    if (second != 0) s += fmt::format(":{:02}", second);
    return s;
}

Result<CivilTime> parse_civil_time(std::string_view text) {
    auto bad = [&](std::string_view why) {
        return Error(errc::invalid_argument,
                     fmt::format("\"{}\" is not a time \"YYYY-MM-DD HH:MM[:SS]\": {}", text, why));
    };
    // Fixed positions: YYYY-MM-DD?HH:MM[:SS]
    if (text.size() != 16 && text.size() != 19) return bad("wrong length");
    auto num = [&](std::size_t at, std::size_t len, int& out) {
        const auto [end, ec] = std::from_chars(text.data() + at, text.data() + at + len, out);
        return ec == std::errc() && end == text.data() + at + len &&
               std::isdigit(static_cast<unsigned char>(text[at]));
    };
    CivilTime c;
    if (!num(0, 4, c.year) || text[4] != '-' || !num(5, 2, c.month) || text[7] != '-' ||
        !num(8, 2, c.day) || (text[10] != ' ' && text[10] != 'T') || !num(11, 2, c.hour) ||
        text[13] != ':' || !num(14, 2, c.minute)) {
        return bad("expected digits and separators at fixed places");
    }
    if (text.size() == 19 && (text[16] != ':' || !num(17, 2, c.second))) return bad("bad seconds");
    if (c.month < 1 || c.month > 12 || c.day < 1 || c.day > days_in_month(c.year, c.month)) {
        return bad("no such date");
    }
    if (c.hour > 23 || c.minute > 59 || c.second > 59) return bad("no such time of day");
    return c;
}

// ---- POSIX TZ rules --------------------------------------------------------------------

struct TimeZone::Rule {
    struct When {
        enum class Kind : std::uint8_t { julian_no_leap, julian_zero, month_week_day };
        Kind kind = Kind::month_week_day;
        int day = 0;  // Jn: 1..365; n: 0..365; M: weekday 0..6
        int month = 0;
        int week = 0;  // 1..5 (5 = last)
        std::int64_t time = 7200;  // seconds after local midnight (may be negative or > 24 h)

        // The local (wall-clock, on the offset in force before it) second it happens in `year`.
        std::int64_t local_in(int year) const {
            std::int64_t d = 0;
            switch (kind) {
                case Kind::julian_no_leap:
                    d = days_from_civil(year, 1, 1) + day - 1 + (leap(year) && day >= 60 ? 1 : 0);
                    break;
                case Kind::julian_zero: d = days_from_civil(year, 1, 1) + day; break;
                case Kind::month_week_day: {
                    const int first = weekday(year, month, 1);
                    int dom = 1 + (day - first + 7) % 7 + (week - 1) * 7;
                    while (dom > days_in_month(year, month)) dom -= 7;
                    d = days_from_civil(year, month, dom);
                    break;
                }
            }
            return d * kDay + time;
        }
    };
    Offset standard;
    std::optional<Offset> daylight;
    When start;  // into daylight time
    When end;    // back to standard time

    Offset at(std::int64_t t) const {
        if (!daylight) return standard;
        const int y = year_of(t + standard.utc_offset);
        const std::int64_t s = start.local_in(y) - standard.utc_offset;
        const std::int64_t e = end.local_in(y) - daylight->utc_offset;
        const bool dst = s < e ? (t >= s && t < e) : !(t >= e && t < s);
        return dst ? *daylight : standard;
    }
};

namespace {

// A small cursor over a POSIX TZ rule.
struct RuleParser {
    std::string_view text;
    std::size_t i = 0;

    bool done() const { return i >= text.size(); }
    char peek() const { return done() ? '\0' : text[i]; }

    std::optional<std::string> name() {
        if (peek() == '<') {
            const auto close = text.find('>', i);
            if (close == std::string_view::npos) return std::nullopt;
            std::string n(text.substr(i + 1, close - i - 1));
            i = close + 1;
            return n.empty() ? std::nullopt : std::optional(n);
        }
        const std::size_t from = i;
        while (!done() && std::isalpha(static_cast<unsigned char>(peek()))) ++i;
        if (i - from < 3) return std::nullopt;
        return std::string(text.substr(from, i - from));
    }
    std::optional<int> number(int max) {
        const std::size_t from = i;
        int v = 0;
        while (!done() && std::isdigit(static_cast<unsigned char>(peek()))) {
            v = v * 10 + (peek() - '0');
            if (v > max) return std::nullopt;
            ++i;
        }
        if (i == from) return std::nullopt;
        return v;
    }
    // [+-]hh[:mm[:ss]], in seconds.
    std::optional<std::int64_t> duration(int max_hours) {
        int sign = 1;
        if (peek() == '+' || peek() == '-') sign = text[i++] == '-' ? -1 : 1;
        auto h = number(max_hours);
        if (!h) return std::nullopt;
        std::int64_t s = *h * 3600;
        for (int part = 0; part < 2 && peek() == ':'; ++part) {
            ++i;
            auto v = number(59);
            if (!v) return std::nullopt;
            s += part == 0 ? *v * 60 : *v;
        }
        return sign * s;
    }
    std::optional<TimeZone::Rule::When> when() {
        TimeZone::Rule::When w;
        if (peek() == 'M') {
            ++i;
            auto m = number(12);
            if (!m || *m < 1 || peek() != '.') return std::nullopt;
            ++i;
            auto wk = number(5);
            if (!wk || *wk < 1 || peek() != '.') return std::nullopt;
            ++i;
            auto d = number(6);
            if (!d) return std::nullopt;
            w.kind = TimeZone::Rule::When::Kind::month_week_day;
            w.month = *m;
            w.week = *wk;
            w.day = *d;
        } else if (peek() == 'J') {
            ++i;
            auto d = number(365);
            if (!d || *d < 1) return std::nullopt;
            w.kind = TimeZone::Rule::When::Kind::julian_no_leap;
            w.day = *d;
        } else {
            auto d = number(365);
            if (!d) return std::nullopt;
            w.kind = TimeZone::Rule::When::Kind::julian_zero;
            w.day = *d;
        }
        if (peek() == '/') {
            ++i;
            auto t = duration(167);
            if (!t) return std::nullopt;
            w.time = *t;
        }
        return w;
    }
};

Result<TimeZone::Rule> parse_rule(std::string_view text) {
    RuleParser p{text};
    TimeZone::Rule r;
    auto std_name = p.name();
    if (!std_name) return bad_rule(text, "no standard-time name");
    auto std_off = p.duration(24);
    if (!std_off) return bad_rule(text, "no standard-time offset");
    r.standard = {static_cast<int>(-*std_off), false, *std_name};
    if (p.done()) return r;
    auto dst_name = p.name();
    if (!dst_name) return bad_rule(text, "a daylight-time name is expected after the offset");
    TimeZone::Offset dst{r.standard.utc_offset + 3600, true, *dst_name};
    if (!p.done() && p.peek() != ',') {
        auto off = p.duration(24);
        if (!off) return bad_rule(text, "bad daylight-time offset");
        dst.utc_offset = static_cast<int>(-*off);
    }
    r.daylight = dst;
    if (p.done()) {  // POSIX leaves it to the implementation; the US rules, as glibc does
        r.start = {TimeZone::Rule::When::Kind::month_week_day, 0, 3, 2, 7200};
        r.end = {TimeZone::Rule::When::Kind::month_week_day, 0, 11, 1, 7200};
        return r;
    }
    if (p.peek() != ',') return bad_rule(text, "',' expected before the start rule");
    ++p.i;
    auto start = p.when();
    if (!start || p.peek() != ',') return bad_rule(text, "bad daylight-time start");
    ++p.i;
    auto end = p.when();
    if (!end || !p.done()) return bad_rule(text, "bad daylight-time end");
    r.start = *start;
    r.end = *end;
    return r;
}

// Big-endian readers over the TZif bytes.
struct Bytes {
    const std::string& data;
    std::size_t at = 0;
    bool have(std::size_t n) const { return at + n <= data.size(); }
    std::int64_t be(std::size_t n) {
        std::uint64_t v = 0;
        for (std::size_t k = 0; k < n; ++k) v = (v << 8) | static_cast<unsigned char>(data[at + k]);
        at += n;
        if (n == 4) return static_cast<std::int32_t>(static_cast<std::uint32_t>(v));
        return static_cast<std::int64_t>(v);
    }
};

}  // namespace

// ---- zones -----------------------------------------------------------------------------

TimeZone TimeZone::utc() {
    TimeZone z;
    z.name_ = "UTC";
    auto rule = std::make_shared<Rule>();
    rule->standard = {0, false, "UTC"};
    z.rule_ = std::move(rule);
    return z;
}

Result<TimeZone> TimeZone::from_rule(std::string_view name, std::string_view rule) {
    auto r = parse_rule(rule);
    if (!r) return r.error();
    TimeZone z;
    z.name_ = std::string(name);
    z.rule_ = std::make_shared<Rule>(std::move(*r));
    return z;
}

Result<TimeZone> TimeZone::load(std::string_view name, const std::filesystem::path& root) {
    if (name == "UTC") return utc();
    if (name.empty() || name.front() == '/' || name.find("..") != std::string_view::npos) {
        return Error(errc::invalid_argument, fmt::format("\"{}\" is not a time zone name", name));
    }
    const auto path = root / std::string(name);
    std::error_code ec;
    std::ifstream in;
    if (std::filesystem::is_regular_file(path, ec)) in.open(path, std::ios::binary);
    if (!in) {
        return Error(errc::not_found, fmt::format("time zone \"{}\" is unknown (not in {})", name, root.string()));
    }
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto corrupt = [&](std::string_view why) {
        return Error(errc::unreadable, fmt::format("{} is not a usable TZif file: {}", path.string(), why));
    };
    if (data.size() < 44 || data.compare(0, 4, "TZif") != 0) {  // zone.tab and friends
        return Error(errc::not_found, fmt::format("time zone \"{}\" is unknown (not in {})", name, root.string()));
    }
    const char version = data[4];

    // Reads one header and data block; `wide` = 64-bit times (version 2+ second block).
    TimeZone z;
    z.name_ = std::string(name);
    Bytes b{data};
    auto block = [&](bool wide) -> Status {
        if (!b.have(44) || data.compare(b.at, 4, "TZif") != 0) return corrupt("truncated header");
        b.at += 20;
        std::array<std::int64_t, 6> n{};
        for (auto& v : n) {
            v = b.be(4);
            if (v < 0 || v > 100000) return corrupt("implausible counts");
        }
        const auto [isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt] = n;
        const std::size_t tsize = wide ? 8 : 4;
        const std::size_t need = static_cast<std::size_t>(timecnt) * (tsize + 1) +
                                 static_cast<std::size_t>(typecnt) * 6 + static_cast<std::size_t>(charcnt) +
                                 static_cast<std::size_t>(leapcnt) * (tsize + 4) +
                                 static_cast<std::size_t>(isstdcnt + isutcnt);
        if (!b.have(need) || typecnt == 0) return corrupt("truncated data block");
        if (!wide && version >= '2') {  // the 32-bit block is only skipped
            b.at += need;
            return {};
        }
        std::vector<std::int64_t> times(static_cast<std::size_t>(timecnt));
        for (auto& t : times) t = b.be(tsize);
        std::vector<std::size_t> idx(static_cast<std::size_t>(timecnt));
        for (auto& k : idx) {
            k = static_cast<std::size_t>(b.be(1));
            if (k >= static_cast<std::size_t>(typecnt)) return corrupt("transition to an unknown type");
        }
        struct Raw { std::int64_t off; bool dst; std::size_t abbr; };
        std::vector<Raw> raw(static_cast<std::size_t>(typecnt));
        for (auto& r : raw) {
            r.off = b.be(4);
            r.dst = b.be(1) != 0;
            r.abbr = static_cast<std::size_t>(b.be(1));
            if (r.off < -25 * 3600 || r.off > 26 * 3600) return corrupt("implausible UTC offset");
        }
        const std::string chars = data.substr(b.at, static_cast<std::size_t>(charcnt));
        b.at += static_cast<std::size_t>(charcnt) + static_cast<std::size_t>(leapcnt) * (tsize + 4) +
                static_cast<std::size_t>(isstdcnt + isutcnt);
        for (const auto& r : raw) {
            std::string abbr = r.abbr < chars.size() ? std::string(chars.c_str() + r.abbr) : "";
            z.types_.push_back({static_cast<int>(r.off), r.dst, abbr});
        }
        for (std::size_t k = 0; k < times.size(); ++k) {
            if (k > 0 && times[k] <= times[k - 1]) return corrupt("transitions out of order");
            z.transitions_.push_back({times[k], idx[k]});
        }
        return {};
    };
    if (auto st = block(false); !st) return st.error();
    if (version >= '2') {
        if (auto st = block(true); !st) return st.error();
        // The footer: "\n<POSIX TZ rule>\n".
        if (b.have(2) && data[b.at] == '\n') {
            const auto end = data.find('\n', b.at + 1);
            if (end == std::string::npos) return corrupt("unterminated footer");
            const std::string footer = data.substr(b.at + 1, end - b.at - 1);
            if (!footer.empty()) {
                auto r = parse_rule(footer);
                if (!r) return corrupt(r.error().message);
                z.rule_ = std::make_shared<Rule>(std::move(*r));
            }
        }
    }
    return z;
}

TimeZone::Offset TimeZone::offset_at(SysSeconds t) const {
    const std::int64_t s = t.time_since_epoch().count();
    if (transitions_.empty()) return rule_ ? rule_->at(s) : (types_.empty() ? Offset{} : types_.front());
    if (s < transitions_.front().at) return types_.front();
    if (s >= transitions_.back().at && rule_) return rule_->at(s);
    auto it = std::upper_bound(transitions_.begin(), transitions_.end(), s,
                               [](std::int64_t v, const Transition& tr) { return v < tr.at; });
    return types_[std::prev(it)->type];
}

TimeZone::Resolved TimeZone::resolve(LocalSeconds t) const {
    const std::int64_t l = t.time_since_epoch().count();
    std::vector<std::int64_t> found;
    for (int k = -2; k <= 2; ++k) {
        const std::int64_t off = offset_at(SysSeconds{seconds{l + k * kDay}}).utc_offset;
        const std::int64_t u = l - off;
        if (offset_at(SysSeconds{seconds{u}}).utc_offset == off &&
            std::find(found.begin(), found.end(), u) == found.end()) {
            found.push_back(u);
        }
    }
    std::sort(found.begin(), found.end());
    Resolved r;
    if (found.size() == 1) {
        r.first = SysSeconds{seconds{found[0]}};
        return r;
    }
    if (found.size() >= 2) {
        r.kind = Resolved::Kind::overlap;
        r.first = SysSeconds{seconds{found.front()}};
        r.second = SysSeconds{seconds{found.back()}};
        return r;
    }
    // A gap: the first instant whose wall clock is past `t`.
    std::int64_t lo = l - 2 * kDay;
    std::int64_t hi = l + 2 * kDay;
    while (lo < hi) {
        const std::int64_t mid = lo + (hi - lo) / 2;
        if (to_local(SysSeconds{seconds{mid}}).time_since_epoch().count() > l) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    r.kind = Resolved::Kind::gap;
    r.first = SysSeconds{seconds{lo}};
    return r;
}

std::string TimeZone::format(SysSeconds t) const {
    const auto off = offset_at(t);
    return fmt::format("{} {}", CivilTime::from(to_local(t)).to_string(), off.abbreviation);
}

}  // namespace vmha::config
