#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include <vmha/lease/lease.h>

namespace vmha::lease {

std::string pair_name(std::string_view node_a, std::string_view node_b) {
    const auto [low, high] = std::minmax(node_a, node_b);
    return fmt::format("{}+{}", low, high);
}

TimePoint certain_end(TimePoint sent, Duration remaining, const LeaseTiming& timing) {
    // Rounded down to the millisecond: never later than the exact bound.
    const auto scaled = Duration(static_cast<Duration::rep>(
        std::floor(static_cast<double>(remaining.count()) * (1.0 - timing.drift))));
    const Duration certain = scaled - timing.margin;
    return certain > Duration::zero() ? sent + certain : sent;
}

Status check_timing(Duration ttl, const LeaseTiming& timing) {
    if (!(timing.drift >= 0.0 && timing.drift < 0.5)) {
        return Error(errc::invalid_argument,
                     fmt::format("lease clock drift {} is outside [0, 0.5)", timing.drift));
    }
    if (timing.margin < Duration::zero()) {
        return Error(errc::invalid_argument,
                     fmt::format("lease safety margin {} ms is negative", timing.margin.count()));
    }
    const auto certain = static_cast<double>(ttl.count()) * (1.0 - timing.drift);
    if (certain <= static_cast<double>(timing.margin.count())) {
        return Error(
            errc::invalid_argument,
            fmt::format("a lease of {} ms leaves no certain time: with clock drift {} and a safety "
                        "margin of {} ms it would be lost before it is granted",
                        ttl.count(), timing.drift, timing.margin.count()));
    }
    return {};
}

LeaseView::LeaseView(std::string self, LeaseTiming timing)
    : self_(std::move(self)), timing_(timing) {}

void LeaseView::on_reply(TimePoint sent, const LeaseState& reply) {
    if (!reply.held_by(self_)) {
        drop();
        return;
    }
    if (until_ && reply.epoch != epoch_) {
        // Granted anew while this view thought it held: the old holding ended in between (the
        // reply that would have said so was lost). The new one starts from this request only.
        ++losses_;
        until_.reset();
    }
    epoch_ = reply.epoch;
    const TimePoint end = certain_end(sent, reply.remaining, timing_);
    if (!until_ || end > *until_) until_ = end;
}

void LeaseView::drop() {
    until_.reset();
}

bool LeaseView::holds(TimePoint now) const {
    return until_ && now < *until_;
}

Duration LeaseView::left(TimePoint now) const {
    if (!holds(now)) return Duration::zero();
    return std::chrono::duration_cast<Duration>(*until_ - now);
}

Duration LeaseView::renew_interval(Duration ttl, LeaseTiming timing) {
    const auto certain = certain_end(TimePoint{}, ttl, timing) - TimePoint{};
    return std::max(Duration(1), std::chrono::duration_cast<Duration>(certain) / 3);
}

}  // namespace vmha::lease
