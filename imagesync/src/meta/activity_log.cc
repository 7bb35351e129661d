#include "meta/activity_log.h"

#include <algorithm>
#include <random>

#include <fmt/format.h>

#include "meta/detail/bytes.h"

namespace imagesync::meta {
namespace {

using namespace detail;

const std::uint64_t kHeaderMagic = magic("vmhaactl");
const std::uint64_t kTxnMagic = magic("vmhaaltx");
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderChecksumAt = 48;

constexpr std::uint32_t kEmpty = 0xffffffffu;
constexpr std::size_t kMaxUpdates = 64;
constexpr std::size_t kUpdatesAt = 32;
constexpr std::size_t kContextAt = kUpdatesAt + kMaxUpdates * 8;  // 544
constexpr std::size_t kTxnChecksumAt = kPageSize - 8;
constexpr std::uint32_t kContextPerTxn = static_cast<std::uint32_t>((kTxnChecksumAt - kContextAt) / 4);

constexpr std::uint32_t kMinExtent = 64u * 1024;
constexpr std::uint32_t kMaxExtent = 1024u * 1024 * 1024;
constexpr std::uint32_t kMinHot = 16;
constexpr std::uint32_t kMaxHot = 65534;

std::uint32_t ring_pages_for(std::uint32_t capacity) {
    const std::uint32_t covering = (capacity + kContextPerTxn - 1) / kContextPerTxn;
    return std::max<std::uint32_t>(8, covering + 2);
}

std::uint64_t random_log_id() {
    static std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

struct Txn {
    std::uint64_t seq = 0;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> updates;
    std::uint32_t context_start = 0;
    std::vector<std::uint32_t> context;
};

}  // namespace

struct ActivityLog::State {
    ActivityLogConfig config;
    std::uint32_t ring_pages = 0;
    std::uint64_t log_id = 0;
    std::vector<std::uint32_t> slots;
    std::uint64_t last_seq = 0;
    std::uint32_t context_next = 0;
};

ActivityLog::ActivityLog(MetaFile& file, const ActivityLogConfig& config, std::uint32_t ring_pages)
    : file_(file),
      config_(config),
      ring_pages_(ring_pages),
      slots_(config.max_hot_extents, kEmpty),
      durable_slots_(config.max_hot_extents, kEmpty) {}

vmha::Status ActivityLog::check_config(const MetaFile& file, const ActivityLogConfig& c) {
    auto bad = [&](std::string why) {
        return vmha::Error(vmha::errc::invalid_argument,
                           fmt::format("activity log \"{}\": {}", file.describe(), why));
    };
    if (!is_power_of_two(c.extent_size) || c.extent_size < kMinExtent || c.extent_size > kMaxExtent) {
        return bad(fmt::format("extent size {} is not a power of two between {} and {}",
                               c.extent_size, human_size(kMinExtent), human_size(kMaxExtent)));
    }
    if (c.max_hot_extents < kMinHot || c.max_hot_extents > kMaxHot) {
        return bad(fmt::format("{} hot extents is outside {}..{}", c.max_hot_extents, kMinHot, kMaxHot));
    }
    if (c.export_size == 0) return bad("the export size is 0");
    if ((c.export_size - 1) / c.extent_size >= kEmpty) {
        return bad(fmt::format("an export of {} bytes has too many {} extents", c.export_size,
                               human_size(c.extent_size)));
    }
    return {};
}

vmha::Result<std::unique_ptr<ActivityLog>> ActivityLog::create(MetaFile& file,
                                                               const ActivityLogConfig& config) {
    if (auto st = check_config(file, config); !st) return std::move(st).error();
    std::unique_ptr<ActivityLog> log(
        new ActivityLog(file, config, ring_pages_for(config.max_hot_extents)));
    log->free_slots_.reserve(config.max_hot_extents);
    for (std::uint32_t s = config.max_hot_extents; s-- > 0;) log->free_slots_.push_back(s);
    log->log_id_ = random_log_id();
    log->header_pending_ = true;
    log->pump();
    return log;
}

vmha::Result<ActivityLog::State> ActivityLog::read_state(MetaFile& file) {
    const std::string name = file.describe();
    auto corrupt = [&](std::string why) {
        return vmha::Error(vmha::errc::unreadable,
                           fmt::format("activity log \"{}\" is corrupt: {}", name, why));
    };
    auto header = file.read(0, kPageSize);
    if (!header) return std::move(header).error();
    std::span<const std::byte> h(*header);
    if (auto st = check_header(h, kHeaderMagic, "vmhaactl", kVersion, kHeaderChecksumAt,
                               "activity log", name);
        !st) {
        return std::move(st).error();
    }
    State st;
    st.config.extent_size = get_u32(h, 16);
    st.config.max_hot_extents = get_u32(h, 20);
    st.ring_pages = get_u32(h, 24);
    st.config.export_size = get_u64(h, 32);
    st.log_id = get_u64(h, 40);
    if (auto ok = check_config(file, st.config); !ok) return corrupt(ok.error().message);
    if (st.ring_pages != ring_pages_for(st.config.max_hot_extents) || get_u32(h, 28) != kContextPerTxn) {
        return corrupt(fmt::format("its ring of {} pages with {} context slots per transaction does "
                                   "not match {} hot extents",
                                   st.ring_pages, get_u32(h, 28), st.config.max_hot_extents));
    }
    const std::uint32_t capacity = st.config.max_hot_extents;
    const std::uint64_t extents = (st.config.export_size - 1) / st.config.extent_size + 1;

    auto ring = file.read(kPageSize, std::size_t{st.ring_pages} * kPageSize);
    if (!ring) return std::move(ring).error();
    std::map<std::uint64_t, Txn> valid;
    for (std::uint32_t i = 0; i < st.ring_pages; ++i) {
        if (ring->size() < (std::size_t{i} + 1) * kPageSize) break;  // never written
        std::span<const std::byte> p = std::span<const std::byte>(*ring).subspan(i * kPageSize, kPageSize);
        if (get_u64(p, 0) != kTxnMagic || get_u64(p, 8) != st.log_id) continue;
        if (get_u64(p, kTxnChecksumAt) != checksum(p.first(kTxnChecksumAt))) continue;  // torn
        Txn t;
        t.seq = get_u64(p, 16);
        const std::uint16_t n_updates = get_u16(p, 24);
        const std::uint16_t n_context = get_u16(p, 26);
        t.context_start = get_u32(p, 28);
        if (t.seq == 0 || (t.seq - 1) % st.ring_pages != i || n_updates > kMaxUpdates ||
            n_context > std::min(kContextPerTxn, capacity) || t.context_start >= capacity) {
            return corrupt(fmt::format("transaction page {} has a valid checksum but impossible "
                                       "contents (sequence {}, {} updates, {} context slots from {})",
                                       i + 1, t.seq, n_updates, n_context, t.context_start));
        }
        auto check_extent = [&](std::uint32_t e) { return e == kEmpty || e < extents; };
        for (std::size_t u = 0; u < n_updates; ++u) {
            std::uint32_t slot = get_u32(p, kUpdatesAt + 8 * u);
            std::uint32_t extent = get_u32(p, kUpdatesAt + 8 * u + 4);
            if (slot >= capacity || !check_extent(extent)) {
                return corrupt(fmt::format("transaction {} updates slot {} to extent {}, outside "
                                           "{} slots and {} extents",
                                           t.seq, slot, extent, capacity, extents));
            }
            t.updates.emplace_back(slot, extent);
        }
        for (std::size_t c = 0; c < n_context; ++c) {
            std::uint32_t extent = get_u32(p, kContextAt + 4 * c);
            if (!check_extent(extent)) {
                return corrupt(fmt::format("transaction {} records extent {} beyond the export's {} "
                                           "extents",
                                           t.seq, extent, extents));
            }
            t.context.push_back(extent);
        }
        valid.emplace(t.seq, std::move(t));
    }

    st.slots.assign(capacity, kEmpty);
    if (valid.empty()) return st;
    // The newest consecutive run: a torn newest page shortens it by one, never breaks it.
    const std::uint64_t newest = valid.rbegin()->first;
    std::uint64_t oldest = newest;
    while (oldest > 1 && newest - (oldest - 1) < st.ring_pages && valid.count(oldest - 1) != 0) --oldest;
    const std::uint64_t run = newest - oldest + 1;
    if (oldest > 1 && run * std::min(kContextPerTxn, capacity) < capacity) {
        return corrupt(fmt::format("only transactions {}..{} are readable, which does not describe "
                                   "all {} slots; a full resync is needed",
                                   oldest, newest, capacity));
    }
    for (std::uint64_t s = oldest; s <= newest; ++s) {
        const Txn& t = valid.at(s);
        for (auto [slot, extent] : t.updates) st.slots[slot] = extent;
        for (std::size_t c = 0; c < t.context.size(); ++c) {
            st.slots[(t.context_start + c) % capacity] = t.context[c];
        }
        st.context_next = static_cast<std::uint32_t>((t.context_start + t.context.size()) % capacity);
    }
    st.last_seq = newest;
    return st;
}

vmha::Result<ActivityLog::Recovered> ActivityLog::recover(MetaFile& file) {
    auto st = read_state(file);
    if (!st) return std::move(st).error();
    ActivityLog view(file, st->config, st->ring_pages);
    view.durable_slots_ = st->slots;
    return Recovered{st->config, view.logged_extents()};
}

vmha::Result<std::unique_ptr<ActivityLog>> ActivityLog::open(MetaFile& file,
                                                             const ActivityLogConfig& config) {
    if (auto ok = check_config(file, config); !ok) return std::move(ok).error();
    auto st = read_state(file);
    if (!st) return std::move(st).error();
    if (st->config != config) {
        return vmha::Error(
            vmha::errc::invalid_config,
            fmt::format("activity log \"{}\" was made with {} extents, {} hot extents and an export "
                        "of {} bytes, but the configuration asks for {} extents, {} hot extents and "
                        "{} bytes; recover its extents into the resync and create a new log",
                        file.describe(), human_size(st->config.extent_size),
                        st->config.max_hot_extents, st->config.export_size,
                        human_size(config.extent_size), config.max_hot_extents, config.export_size));
    }
    std::unique_ptr<ActivityLog> log(new ActivityLog(file, config, st->ring_pages));
    log->log_id_ = st->log_id;
    log->slots_ = st->slots;
    log->durable_slots_ = st->slots;
    log->next_seq_ = st->last_seq + 1;
    log->durable_seq_ = st->last_seq;
    log->context_start_ = st->context_next;
    for (std::uint32_t s = config.max_hot_extents; s-- > 0;) {
        const std::uint32_t e = log->slots_[s];
        if (e == kEmpty || log->hot_.count(e) != 0) {
            if (e != kEmpty) log->slots_[s] = kEmpty;  // a duplicate: keep one slot per extent
            log->free_slots_.push_back(s);
            continue;
        }
        Hot& hot = log->hot_[e];
        hot.slot = s;
        hot.lru = log->lru_push_back(e);
    }
    return log;
}

// ----- writes --------------------------------------------------------------------------------

void ActivityLog::check_range(std::uint64_t offset, std::uint64_t length, const char* what) const {
    if (offset > config_.export_size || length > config_.export_size - offset) {
        vmha::internal_error(fmt::format("activity log \"{}\": {} of {} bytes at offset {} beyond the "
                                         "export's {} bytes",
                                         file_.describe(), what, length, offset, config_.export_size));
    }
}

bool ActivityLog::begin_write(std::uint64_t offset, std::uint64_t length, DoneCallback done) {
    check_range(offset, length, "a write");
    if (failure_) {
        done(*failure_);
        return false;
    }
    if (length == 0) {
        done({});
        return false;
    }
    const auto first = static_cast<std::uint32_t>(offset / config_.extent_size);
    const auto last = static_cast<std::uint32_t>((offset + length - 1) / config_.extent_size);
    if (last - first + 1 > config_.max_hot_extents) {
        done(vmha::Error(vmha::errc::invalid_argument,
                         fmt::format("a write of {} bytes at offset {} spans {} extents, more than "
                                     "the activity log's {} hot extents",
                                     length, offset, last - first + 1, config_.max_hot_extents)));
        return false;
    }
    bool needs_new = false;
    for (std::uint32_t e = first; e <= last && !needs_new; ++e) needs_new = hot_.count(e) == 0;
    // Writes waiting for a slot go first; a write needing no new slot need not wait behind them.
    if (!(needs_new && !blocked_.empty())) {
        switch (admit(first, last, done)) {
            case Admit::now: return false;
            case Admit::later: return true;
            case Admit::no_slot: break;
        }
    }
    blocked_.push_back({offset, length, std::move(done)});
    return true;
}

ActivityLog::Admit ActivityLog::admit(std::uint32_t first, std::uint32_t last, DoneCallback& done) {
    std::size_t need_new = 0;
    std::size_t own_idle = 0;
    for (std::uint32_t e = first; e <= last; ++e) {
        auto it = hot_.find(e);
        if (it == hot_.end()) {
            ++need_new;
        } else if (it->second.in_flight == 0) {
            ++own_idle;
        }
    }
    if (need_new > free_slots_.size() + lru_.size() - own_idle) return Admit::no_slot;

    std::uint64_t needed = 0;
    // First pin the hot extents, so that the new ones cannot evict them.
    for (std::uint32_t e = first; e <= last; ++e) {
        auto it = hot_.find(e);
        if (it == hot_.end()) continue;
        Hot& hot = it->second;
        if (hot.in_flight++ == 0) lru_remove(hot.lru);
        needed = std::max(needed, hot.log_seq);
    }
    for (std::uint32_t e = first; e <= last; ++e) {
        if (hot_.count(e) != 0) continue;
        std::uint32_t slot;
        if (!free_slots_.empty()) {
            slot = free_slots_.back();
            free_slots_.pop_back();
        } else {
            const std::uint32_t victim = lru_.front();
            lru_remove(lru_.begin());
            slot = hot_.at(victim).slot;
            hot_.erase(victim);  // its slot's update below is the record of its eviction
        }
        slots_[slot] = e;
        const std::uint64_t seq = next_seq_ + pending_updates_.size() / kMaxUpdates;
        pending_updates_.emplace_back(slot, e);
        Hot& hot = hot_[e];
        hot.slot = slot;
        hot.in_flight = 1;
        hot.log_seq = seq;
        needed = std::max(needed, seq);
    }
    if (needed <= durable_seq_) {
        done({});
        return Admit::now;
    }
    waiters_.emplace(needed, std::move(done));
    pump();
    return Admit::later;
}

std::list<std::uint32_t>::iterator ActivityLog::lru_push_back(std::uint32_t extent) {
    if (lru_spare_.empty()) return lru_.insert(lru_.end(), extent);
    lru_.splice(lru_.end(), lru_spare_, lru_spare_.begin());
    lru_.back() = extent;
    return std::prev(lru_.end());
}

void ActivityLog::lru_remove(std::list<std::uint32_t>::iterator it) {
    lru_spare_.splice(lru_spare_.end(), lru_, it);
}

void ActivityLog::end_write(std::uint64_t offset, std::uint64_t length) {
    check_range(offset, length, "ending a write");
    if (length == 0) return;
    const auto first = static_cast<std::uint32_t>(offset / config_.extent_size);
    const auto last = static_cast<std::uint32_t>((offset + length - 1) / config_.extent_size);
    for (std::uint32_t e = first; e <= last; ++e) {
        auto it = hot_.find(e);
        if (it == hot_.end() || it->second.in_flight == 0) {
            vmha::internal_error(fmt::format("activity log \"{}\": end_write of {} bytes at offset "
                                             "{} without a write in flight in extent {}",
                                             file_.describe(), length, offset, e));
        }
        if (--it->second.in_flight == 0) it->second.lru = lru_push_back(e);
    }
    admit_blocked();
}

void ActivityLog::admit_blocked() {
    while (!blocked_.empty() && !failure_) {
        Blocked b = std::move(blocked_.front());
        blocked_.pop_front();
        const auto first = static_cast<std::uint32_t>(b.offset / config_.extent_size);
        const auto last = static_cast<std::uint32_t>((b.offset + b.length - 1) / config_.extent_size);
        if (admit(first, last, b.done) == Admit::no_slot) {
            blocked_.push_front(std::move(b));
            return;
        }
    }
}

bool ActivityLog::flush(DoneCallback done) {
    if (failure_) {
        done(*failure_);
        return false;
    }
    if (!in_flight_ && !header_pending_ && pending_updates_.empty()) {
        done({});
        return false;
    }
    flush_waiters_.push_back(std::move(done));
    return true;
}

bool ActivityLog::reset(DoneCallback done) {
    for (const auto& [extent, hot] : hot_) {
        if (hot.in_flight != 0) {
            vmha::internal_error(fmt::format("activity log \"{}\": reset with a write in flight in "
                                             "extent {}",
                                             file_.describe(), extent));
        }
    }
    if (in_flight_ && !in_flight_is_header_) {
        vmha::internal_error(fmt::format("activity log \"{}\": reset while transaction {} is being "
                                         "written for no write in flight",
                                         file_.describe(), in_flight_seq_));
    }
    if (failure_) {
        done(*failure_);
        return false;
    }
    hot_.clear();
    lru_.clear();
    std::fill(slots_.begin(), slots_.end(), kEmpty);
    free_slots_.clear();
    for (std::uint32_t s = config_.max_hot_extents; s-- > 0;) free_slots_.push_back(s);
    log_id_ = random_log_id();
    next_seq_ = 1;
    durable_seq_ = 0;
    context_start_ = 0;
    header_pending_ = true;
    flush_waiters_.push_back(std::move(done));
    pump();
    return true;
}

// ----- the log writer ------------------------------------------------------------------------

void ActivityLog::pump() {
    if (in_flight_ || failure_) return;
    if (header_pending_) {
        header_pending_ = false;
        in_flight_ = true;
        in_flight_is_header_ = true;
        std::vector<Page> pages;
        pages.push_back(header_page());
        file_.write_pages(std::move(pages), [this](vmha::Status st) { on_write_done(std::move(st)); });
        return;
    }
    if (pending_updates_.empty()) {
        std::vector<DoneCallback> flushed = std::move(flush_waiters_);
        flush_waiters_.clear();
        for (auto& f : flushed) f({});
        return;
    }
    const std::uint32_t capacity = config_.max_hot_extents;
    const std::uint64_t seq = next_seq_++;
    Page page{1 + (seq - 1) % ring_pages_, std::vector<std::byte>(kPageSize)};
    std::span<std::byte> p(page.bytes);
    const std::size_t n_updates = std::min(kMaxUpdates, pending_updates_.size());
    const std::uint32_t n_context = std::min(kContextPerTxn, capacity);
    put_u64(p, 0, kTxnMagic);
    put_u64(p, 8, log_id_);
    put_u64(p, 16, seq);
    put_u16(p, 24, static_cast<std::uint16_t>(n_updates));
    put_u16(p, 26, static_cast<std::uint16_t>(n_context));
    put_u32(p, 28, context_start_);
    in_flight_values_.clear();
    for (std::size_t u = 0; u < n_updates; ++u) {
        auto [slot, extent] = pending_updates_.front();
        pending_updates_.pop_front();
        put_u32(p, kUpdatesAt + 8 * u, slot);
        put_u32(p, kUpdatesAt + 8 * u + 4, extent);
        in_flight_values_.emplace_back(slot, extent);
    }
    for (std::uint32_t c = 0; c < n_context; ++c) {
        const std::uint32_t slot = (context_start_ + c) % capacity;
        put_u32(p, kContextAt + 4 * c, slots_[slot]);
        in_flight_values_.emplace_back(slot, slots_[slot]);
    }
    context_start_ = (context_start_ + n_context) % capacity;
    put_u64(p, kTxnChecksumAt, checksum(p.first(kTxnChecksumAt)));
    in_flight_ = true;
    in_flight_is_header_ = false;
    in_flight_seq_ = seq;
    std::vector<Page> pages;
    pages.push_back(std::move(page));
    file_.write_pages(std::move(pages), [this](vmha::Status st) { on_write_done(std::move(st)); });
}

void ActivityLog::on_write_done(vmha::Status status) {
    in_flight_ = false;
    if (!status) {
        failure_ = vmha::Error(status.error().code,
                               fmt::format("activity log \"{}\" could not be written, so no further "
                                           "write can start: {}",
                                           file_.describe(), status.error().message));
        fail_everything();
        return;
    }
    if (in_flight_is_header_) {
        std::fill(durable_slots_.begin(), durable_slots_.end(), kEmpty);
    } else {
        for (auto [slot, extent] : in_flight_values_) durable_slots_[slot] = extent;
        durable_seq_ = in_flight_seq_;
        ++transactions_written_;
    }
    std::vector<DoneCallback> released;
    auto end = waiters_.upper_bound(durable_seq_);
    for (auto it = waiters_.begin(); it != end; ++it) released.push_back(std::move(it->second));
    waiters_.erase(waiters_.begin(), end);
    pump();
    for (auto& w : released) w({});
}

void ActivityLog::fail_everything() {
    std::vector<DoneCallback> all;
    for (auto& [seq, w] : waiters_) all.push_back(std::move(w));
    waiters_.clear();
    for (auto& f : flush_waiters_) all.push_back(std::move(f));
    flush_waiters_.clear();
    for (auto& b : blocked_) all.push_back(std::move(b.done));
    blocked_.clear();
    for (auto& w : all) w(*failure_);
}

Page ActivityLog::header_page() const {
    Page page{0, std::vector<std::byte>(kPageSize)};
    std::span<std::byte> h(page.bytes);
    put_u64(h, 0, kHeaderMagic);
    put_u32(h, 8, kVersion);
    put_u32(h, 12, 0);
    put_u32(h, 16, config_.extent_size);
    put_u32(h, 20, config_.max_hot_extents);
    put_u32(h, 24, ring_pages_);
    put_u32(h, 28, kContextPerTxn);
    put_u64(h, 32, config_.export_size);
    put_u64(h, 40, log_id_);
    put_u64(h, kHeaderChecksumAt, checksum(h.first(kHeaderChecksumAt)));
    return page;
}

// ----- queries -------------------------------------------------------------------------------

std::vector<ByteRange> ActivityLog::logged_extents() const {
    std::vector<std::uint32_t> extents;
    for (std::uint32_t e : durable_slots_) {
        if (e != kEmpty) extents.push_back(e);
    }
    std::sort(extents.begin(), extents.end());
    extents.erase(std::unique(extents.begin(), extents.end()), extents.end());
    std::vector<ByteRange> out;
    for (std::uint32_t e : extents) {
        const std::uint64_t offset = std::uint64_t{e} * config_.extent_size;
        const std::uint64_t end = std::min(offset + config_.extent_size, config_.export_size);
        if (!out.empty() && out.back().end() == offset) {
            out.back().length = end - out.back().offset;
        } else {
            out.push_back({offset, end - offset});
        }
    }
    return out;
}

bool ActivityLog::is_hot(std::uint64_t offset) const {
    return offset < config_.export_size &&
           hot_.count(static_cast<std::uint32_t>(offset / config_.extent_size)) != 0;
}

}  // namespace imagesync::meta
