// Data generations: which node's copy of a module's disks is newer, decided on reconnect.
//
// Modelled on DRBD's generation UUIDs (drbd_uuid_compare, DRBD 8.4). Each node keeps, durably:
//   current  the id of the line of history its data is on now;
//   bitmap   when non-zero, the generation the peer was last known to share: the node's dirty
//            map holds (a superset of) every chunk written since then;
//   history  older generations, newest first.
// A node that starts writing without its peer first mints a new generation
// (new_generation_when_alone: bitmap := current, current := fresh id, the old bitmap moves into
// history) and persists it before its first write. So every split is on disk before the first
// diverging byte, and on reconnect the two tuples alone tell "the peer just missed writes"
// (bitmap resync) from "both sides wrote" (split brain) from "a stranger" (refuse).
//
// Ids 0..15 are reserved: 0 = none, kJustCreated = a copy that never held declared data.
// Fresh ids are random and never reserved. Unlike DRBD, "was primary" is not bit 0 of an id
// but an explicit flag (NodeMeta::was_primary); ids compare whole.
//
// decide() — evaluated top to bottom, the first matching row wins ("s" = self, "p" = peer;
// "AL joins" = the crashed primary's activity-log extents join the bitmap resync):
//
// | rule | condition                                                  | result                  |
// |------|------------------------------------------------------------|-------------------------|
// |   1  | both sides Inconsistent                                    | no_usable_source        |
// |  10  | neither side holds a generation (JustCreated or 0)         | no_usable_source        |
// |  20  | s.current is JustCreated (or 0), p.current is not          | self_is_target_full     |
// |  30  | p.current is JustCreated (or 0), s.current is not          | self_is_source_full     |
// |  40  | s.current == p.current, one side Inconsistent              | consistent side is      |
// |      |   (an interrupted resync resumes)                          |   bitmap source         |
// |  41  | s.current == p.current, neither crashed as primary         | in_sync                 |
// |  42  | s.current == p.current, crashed primary on one/both sides: | bitmap resync, AL joins |
// |      |   source = the side primary now; if none (or both): the    |                         |
// |      |   side that crashed as primary; if both: the tie winner    |                         |
// |  50  | s.current == p.bitmap (peer wrote alone since our gen)     | self_is_target_bitmap   |
// |  60  | s.current in p.history (peer newer, its map doesn't reach) | self_is_target_full     |
// |  70  | p.current == s.bitmap (we wrote alone since peer's gen)    | self_is_source_bitmap   |
// |  80  | p.current in s.history                                     | self_is_source_full     |
// |      |   (rows 50-80 apply only when one side alone is behind; if |                         |
// |      |   corrupt histories say both are, rows 90-110 decide)      |                         |
// |  90  | s.bitmap == p.bitmap != 0 (both wrote alone since it)      | split_brain             |
// | 100  | any id shared between {s.bitmap, s.history} and            | split_brain (older)     |
// |      |   {p.bitmap, p.history}                                    |                         |
// | 110  | nothing shared                                             | unrelated               |
// |   2  | (after any row) the chosen source is Inconsistent or       | no_usable_source        |
// |      |   Unknown, or Outdated while the target is UpToDate        |                         |
//
// For rows 40, 42, 50 and 70 the AL-joins flags are set for each side that crashed as primary.
// decide() is symmetric: decide(a, b, r) is the mirror of decide(b, a, r.mirrored()).
// See docs/generations.md for the scenarios behind each row and where vmha departs from DRBD.
//
// Threading: plain values and pure functions; no state of their own.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <vmha/error.h>

namespace imagesync::meta {

// The data state of a node's copy (SPEC §4): only an UpToDate copy may ever start the VM.
enum class DataState : std::uint8_t {
    Unknown = 0,       // cannot be established (e.g. the peer's copy while it is unreachable)
    UpToDate = 1,      // has every acknowledged write of its generation
    Inconsistent = 2,  // a resync target in progress, or never initialised: unusable
    Outdated = 3,      // consistent but known to lack writes the other node has
};
std::string_view to_string(DataState state);

inline constexpr std::uint64_t kNoGeneration = 0;
inline constexpr std::uint64_t kJustCreated = 4;
inline constexpr std::size_t kHistorySize = 4;

inline constexpr bool is_reserved_generation(std::uint64_t id) { return id < 16; }
// A random id that is never reserved.
std::uint64_t fresh_generation_id();
// "0x3f2a…" for logs and messages.
std::string format_generation(std::uint64_t id);

struct Generations {
    std::uint64_t current = kJustCreated;
    std::uint64_t bitmap = kNoGeneration;
    std::array<std::uint64_t, kHistorySize> history{};

    // About to write without the peer: bitmap := current, current := fresh_id, and a non-zero
    // old bitmap is pushed into history. Call once per loss of the peer, before the first write
    // (not again when a node that is still alone restarts: its dirty map is persistent).
    void new_generation_when_alone(std::uint64_t fresh_id);
    // Resync source, resync finished: the peer now shares `current`; the bitmap id moves into
    // history and bitmap := 0.
    void clear_bitmap_after_sync();
    // Pushes `id` at the front of history (the oldest entry falls off). Ignores reserved ids.
    void push_history(std::uint64_t id);
    bool in_history(std::uint64_t id) const;

    bool operator==(const Generations&) const = default;
};

enum class ResyncKind : std::uint8_t { none = 0, bitmap = 1, full = 2 };
std::string_view to_string(ResyncKind kind);

// Everything about a node's copy that must survive a crash (persisted by MetaStore).
struct NodeMeta {
    Generations gen;
    DataState data_state = DataState::Inconsistent;
    // Set durably before the first write as primary; cleared at a clean demotion. Found set at
    // start → the node crashed while primary (crashed_primary).
    bool was_primary = false;
    // Unclean shutdown while primary: this copy's activity-log extents may hold writes the peer
    // never saw. Cleared when a resync with the peer completes.
    bool crashed_primary = false;
    // A resync target in progress and where to resume it (a byte offset of the export).
    ResyncKind resync = ResyncKind::none;
    std::uint64_t resync_cursor = 0;

    bool resync_in_progress() const { return resync != ResyncKind::none; }

    // A copy that never held declared data.
    static NodeMeta just_created();
    // The node whose existing image is declared the initial data (operator's choice).
    static NodeMeta initial_source(std::uint64_t fresh_id);

    // At start, before anything else: an uncleared was_primary means a crash while primary.
    void note_start();
    // Becoming primary (persist before the first write) / clean demotion or shutdown.
    void promote();
    void demote_cleanly();
    void new_generation_when_alone(std::uint64_t fresh_id) { gen.new_generation_when_alone(fresh_id); }
    // The peer is known to have newer data than this copy.
    void mark_outdated();
    // The operator's explicit choice (`vmha prim --force`) that this Outdated or Unknown copy
    // is the data to keep, e.g. when the peer is gone for good. Refuses an Inconsistent copy,
    // which is half-written. Generations are untouched: the node mints a new one when it writes
    // alone, so a peer that wrote meanwhile still shows up as split brain.
    vmha::Status force_up_to_date();
    // Resync target: the whole copy will be overwritten. The ids become JustCreated, so a
    // reconnect after an interruption resumes as a full target (rule 20), never as split brain.
    void start_full_sync_target();
    // Resync target of a bitmap resync: ids kept; Inconsistent until finished.
    void start_bitmap_sync_target();
    void advance_resync(std::uint64_t cursor) { resync_cursor = cursor; }
    // Resync target, finished: adopts the source's ids (as they are after its
    // clear_bitmap_after_sync()) and becomes UpToDate.
    void finish_sync_target(const Generations& source);
    // Resync source, finished.
    void finish_sync_source();

    bool operator==(const NodeMeta&) const = default;
};

enum class SyncKind : std::uint8_t {
    in_sync,                // same generation, nothing to copy
    self_is_source_bitmap,  // peer is behind: copy our dirty map (∪ AL extents) to it
    self_is_target_bitmap,  // we are behind: receive the peer's dirty map (∪ AL extents)
    self_is_source_full,    // peer behind beyond our dirty map, or empty: full (checksum) resync
    self_is_target_full,
    split_brain,            // both wrote alone since the shared generation: an operator decides
    unrelated,              // no common generation: refuse to connect
    no_usable_source,       // the side that would be the source is unusable: refuse
};
std::string_view to_string(SyncKind kind);
// The same decision seen from the peer.
SyncKind mirror(SyncKind kind);

struct Roles {
    bool self_primary = false;   // self is primary now (PRIM/ALONE)
    bool peer_primary = false;
    bool self_wins_ties = false;  // a fixed, agreed tie-breaker (e.g. the lower node name)
    Roles mirrored() const { return {peer_primary, self_primary, !self_wins_ties}; }
};

struct SyncDecision {
    SyncKind kind = SyncKind::unrelated;
    int rule = 0;        // the table row, for logs ("rule 50")
    std::string reason;  // a whole sentence quoting the ids
    bool self_activity_log_joins = false;
    bool peer_activity_log_joins = false;
};

SyncDecision decide(const NodeMeta& self, const NodeMeta& peer, const Roles& roles);

// The first non-reserved id present in both {a.bitmap, a.history} and {b.bitmap, b.history}
// (a's newest first), or 0: for a split brain, the generation since which both wrote alone.
std::uint64_t shared_ancestor(const Generations& a, const Generations& b);

}  // namespace imagesync::meta
