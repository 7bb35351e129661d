// Synchronous replication of one module's exports to the peer imagesyncd, and the safety
// state of this node's copy: role, data state, generations, dirty maps.
//
// The primary dials the peer (--peer) and replicates every modifying operation: an export's
// write path calls the replicator's sink for that export, and the NBD reply goes out only
// when the local write and the peer's ACK are both done. When the peer is lost (connection
// error, or no ACK within the timeout), the primary first mints a new data generation
// (durably), then records every in-flight and later write in that export's persistent dirty
// map before replying; it goes on alone. On reconnect the HELLO handshake compares
// generations (meta/generations.h decide()) and a bitmap resync copies the dirty ranges in
// offset order while new writes keep flowing; a resync chunk holds the export's interval lock
// for its range, so a new write to that range is ordered after the copy.
//
// The secondary listens (--listen), accepts one primary at a time and applies its operations
// in arrival order (the export's interval lock again), acknowledging each once it is written
// (FUA: durable; FLUSH: fdatasync first).
//
// The link's states and transitions are link_state.h's table; every transition is logged with
// its reason and shown by `imagesync status`.
//
// Owned by the io_context's single thread; every member runs there.
#pragma once

#include <chrono>
#include <memory>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <imagesync/server.h>
#include <vmha/error.h>

#include <boost/asio/ip/tcp.hpp>

#include "asio.h"
#include "export.h"
#include "meta/generations.h"
#include "peer/peer_protocol.h"
#include "replication/link_state.h"
#include "uring.h"

namespace imagesync::replication {

using Clock = std::chrono::steady_clock;

// A TCP endpoint as given on the command line ("HOST:PORT", "[V6]:PORT").
struct Endpoint {
    std::string host;
    std::uint16_t port = 0;
    std::string to_string() const;
};
vmha::Result<Endpoint> parse_endpoint(std::string_view text);

struct ReplicatorConfig {
    std::string module = "imagesync";
    std::string node;
    Role role = Role::primary;
    std::optional<Endpoint> listen;  // secondary: where the primary dials us
    std::optional<Endpoint> peer;    // primary: where to dial the secondary
    std::chrono::milliseconds timeout{5000};
    std::chrono::milliseconds connect_retry{500};
    std::filesystem::path meta_dir;
    std::uint32_t chunk_size = 64 * 1024;        // dirty map and verify granularity
    std::uint32_t activity_log_extent = 4u << 20;  // bytes per activity-log extent
    bool start_disconnected = false;
    std::uint64_t resync_rate = 0;  // bytes per second a resync may use; 0 = no limit
    // While the VM writes (a write in the last 100 ms), a resync yields: one request in flight
    // and at most this rate (DRBD's c-min-rate). 0 = never yield.
    std::uint64_t resync_min_rate = 8u << 20;
    // Fencing (DRBD's "fencing resource-only" with frozen I/O): after losing the peer, a primary
    // records writes dirty as always but holds their replies until release_fence() (vmhad: the
    // peer's copy is now Outdated, or the peer is gone) or a reconnect. So no write is ever
    // acknowledged alone while the peer could still start the VM on a copy that lacks it.
    bool fence = false;
    // What a split brain found at the handshake does (both sides must agree, or the handshake
    // is refused): disconnect (refuse until an operator keeps one side with a forced
    // promotion), or discard-zero-changes (the side that wrote nothing since the split becomes
    // the full resync target). docs/generations.md, "Split brain".
    peer::SplitBrainPolicy split_brain = peer::SplitBrainPolicy::disconnect;
    // A client's write payload of at least this many bytes, in a batch for the send thread, is
    // lent to the socket (vmsplice + splice) instead of copied into it (send_thread.h,
    // "Zero-copy send"). 0 = always copy.
    std::size_t zero_copy_min_bytes = 64 * 1024;
    // TCP congestion control of the link's sockets, set by each side on its own socket
    // (tcp_congestion.h); kSystemCongestion ("system") keeps the kernel's default.
    std::string tcp_congestion = "cubic";
};
std::string_view to_string(peer::SplitBrainPolicy policy);
vmha::Result<peer::SplitBrainPolicy> parse_split_brain_policy(std::string_view text);

class Replicator {
public:
    // Opens (or creates) the metadata in config.meta_dir: node.meta, and per export a dirty
    // map (EXPORT.dirty) and an activity log (EXPORT.al), written through `uring`. After a
    // crash while primary, the activity log's extents are merged into the dirty map (primary)
    // or kept to be sent to the sync source (secondary). Runs before the event loop does.
    static vmha::Result<std::unique_ptr<Replicator>> open(asio::io_context& io, Uring& uring,
                                                          const ReplicatorConfig& config,
                                                          std::vector<Export*> exports);
    ~Replicator();
    Replicator(const Replicator&) = delete;
    Replicator& operator=(const Replicator&) = delete;

    // The sink an export's write path calls (primary only; a secondary refuses writes).
    std::shared_ptr<ReplicaSink> sink(std::size_t export_index);
    // The gate before every write of the export: its activity-log extent is durable first.
    WriteGate* gate(std::size_t export_index);

    void start();
    // Stops: closes the link (in-flight replicated writes are recorded dirty first), then
    // calls `done`.
    void stop(std::function<void()> done);

    Role role() const { return role_; }
    meta::DataState data_state() const { return meta_.data_state; }

    // Operator commands (control socket). Each returns at once; the effect is logged.
    vmha::Status promote(bool force);
    // Refuses new writes, drains the ones in flight, flushes both sides, then becomes
    // secondary; `done` gets the outcome.
    void demote(std::function<void(vmha::Status)> done);
    void connect();
    void disconnect();
    // Online verify (primary, connected): compares every chunk of every export with the peer by
    // XXH3-64 while writes go on, and reports the differing ranges; with `mark`, they are
    // recorded dirty and resynced. `done` gets the report (or the error).
    void verify(bool mark, std::function<void(vmha::Result<nlohmann::json>)> done);
    // Primary, connected: copy what the dirty map holds now (after a verify without --mark,
    // say); with `full`, every chunk of every export.
    vmha::Status resync(bool full);
    // Secondary, not connected: the peer went on alone without us, so this copy is no longer
    // the newest; mark it Outdated durably (an Inconsistent copy stays Inconsistent). Refused
    // on a primary and while a peer is connected (the handshake then knows better).
    vmha::Status outdate();
    // Fencing done (the peer is Outdated or gone): the held replies go out, in order, and later
    // writes are acknowledged once recorded dirty. An error when nothing is held back.
    vmha::Status release_fence();
    // The write lease (vmhad with a witness): writes are refused (read_only: the NBD client gets
    // EPERM) once `valid_for` has passed on this process's monotonic clock, until a later call
    // extends it; nullopt removes the deadline. Kept across promotions and demotions (vmhad
    // sets it before it promotes); a new imagesyncd process starts without one.
    void set_write_lease(std::optional<std::chrono::milliseconds> valid_for);
    // Secondary, not connected, holding writes made without the peer none of which was ever
    // acknowledged (they were all failed: a self-fenced primary's in-flight writes): the copy
    // becomes a full resync target of the peer instead of a split-brain side, since nothing a
    // client was told is written is lost. Refused otherwise, with the reason (also when the
    // writes began before this process started: then it cannot know).
    vmha::Status discard_unacknowledged();
    // Whether a write may start now (the write lease), with the refusal if not.
    vmha::Status write_lease_allows();

    nlohmann::json status() const;

private:
    class Session;
    class Sink;
    class Gate;
    struct Pending;

    Replicator(asio::io_context& io, Uring& uring, const ReplicatorConfig& config,
               std::vector<Export*> exports);
    vmha::Status load_meta();
    // Start-up only: runs an asynchronous metadata operation to completion on the loop.
    vmha::Status wait(const std::function<bool(std::function<void(vmha::Status)>)>& start);
    void clean_shutdown(std::function<void()> done);
    void on_peer_extents(const peer::Extents& extents);
    void answer_checksums(Session& session, std::uint64_t cookie, const peer::ChecksumRequest& request);
    struct VerifyRun;
    void pump_verify();
    void finish_verify(std::optional<vmha::Error> error);
    // Full resync (a new or unknown peer): a compare pass over every chunk — XXH3-64 on both
    // sides in parallel, holes of the source marked without asking — marks what differs, then
    // the bitmap resync copies only that.
    void start_full_resync();
    void begin_resync();  // after the handshake (and the peer's EXTENTS, if it sends them)
    bool full_resync_pending_ = false;
    bool peer_images_empty_ = false;  // the peer's HELLO: its images hold no data at all
    std::uint64_t verify_runs_ = 0;   // ids for VerifyRun: a batch counts only for its own run
    std::uint64_t target_epoch_ = 0;  // target: bumps when a new resync is announced
    bool images_empty() const;        // ours: SEEK_DATA finds nothing in any image
    vmha::Status save_meta(const char* why);

    void fire(LinkEvent event, const std::string& reason);
    void start_connecting();
    void stop_connecting();
    asio::awaitable<void> dial_loop(std::uint64_t generation);
    asio::awaitable<void> accept_loop(std::uint64_t generation);
    void attach(std::shared_ptr<Session> session);
    void on_session_closed(Session* session, const std::string& reason);
    // The live session is gone (closed, or replaced by a newer connection): the link is lost,
    // requests in flight and writes held for the handshake are recorded dirty.
    void detach_session(const std::string& reason);
    // Writes that arrived while the handshake ran: replicated once it succeeds, recorded dirty
    // if it fails (so a reconnect never makes a write "alone" and the generations stay agreed).
    struct HeldWrite {
        std::size_t export_index;
        WriteOp op;
        std::function<void(vmha::Status)> done;
    };
    void release_held_writes();

    // Completes a client's operation that replicate() sent, with the peer's status (nullopt:
    // the link went down first), or records it dirty.
    void complete_forwarded(Pending& p, std::optional<std::uint32_t> status);

    // Chunks the peer acknowledged but may not have made durable yet (no FLUSH acknowledged
    // since): if the link drops, the peer may lose them in a crash, so they join the dirty map.
    // `unflushed_` collects, `flushing_` is what the latest FLUSH in flight covers.
    void note_replicated(std::size_t export_index, std::uint64_t offset, std::uint64_t length);
    void fold_unflushed_into_dirty_map();
    struct Unflushed {
        std::vector<bool> marked;             // chunk -> in `chunks` (dedupe)
        std::vector<std::uint64_t> chunks;    // acknowledged since the last FLUSH was sent
        std::vector<std::uint64_t> flushing;  // covered by the newest FLUSH in flight
    };
    std::vector<Unflushed> unflushed_;
    std::uint64_t flush_sequence_ = 0;
    bool any_unflushed_ = false;

    // A range that differs between the copies although both are "in sync" (the local write
    // failed after the peer's succeeded): record it dirty and resync it.
    void local_write_failed(std::size_t export_index, const WriteOp& op);

    std::size_t applying_ = 0;  // secondary: replicated operations not finished yet
    bool demoting_ = false;

    // Handshake, from the peer's HELLO; returns false when refused.
    bool on_hello(Session& session, const peer::Hello& hello);
    peer::Hello make_hello() const;
    // Every message after the handshake.
    void on_message(Session& session, peer::Message message, std::shared_ptr<const std::byte[]> owner);
    void apply_from_peer(Session& session, std::uint64_t cookie, const peer::Range& range,
                         WriteOp op, std::shared_ptr<const std::byte[]> owner);
    void on_ack(std::uint64_t cookie, std::uint32_t status);
    void on_resync_finished_by_source(Session& session, const peer::State& state);
    void send_ping(Session& session);

    // Primary write path.
    void replicate(std::size_t export_index, const WriteOp& op, std::function<void(vmha::Status)> done);
    void record_dirty(std::size_t export_index, const WriteOp& op, std::function<void(vmha::Status)> done);
    vmha::Status ensure_alone_generation();

    // Resync (source side).
    void start_resync();
    void pump_resync();
    bool resync_may_send(std::uint64_t bytes);
    // The resync controller: is the VM writing now? (then the resync yields to it)
    bool resync_yields() const;
    std::uint64_t resync_rate_now() const;
    Clock::time_point last_client_write_{};
    void finish_resync_source();

    asio::io_context& io_;
    Uring& uring_;
    ReplicatorConfig config_;
    std::vector<Export*> exports_;
    Role role_;
    LinkState link_ = LinkState::connecting;
    std::string link_reason_ = "starting";
    std::uint64_t connect_generation_ = 0;  // bumps to end stale dial/accept loops

    meta::NodeMeta meta_;
    std::unique_ptr<struct MetaParts> parts_;  // store, dirty maps and their files

    std::shared_ptr<Session> session_;  // the live peer link, if any
    std::map<std::uint64_t, std::shared_ptr<Pending>> pending_;  // primary: by cookie
    std::uint64_t next_cookie_ = 1;
    std::optional<asio::ip::tcp::acceptor> acceptor_;
    std::vector<std::shared_ptr<Sink>> sinks_;
    std::vector<std::unique_ptr<Gate>> gates_;
    // A secondary that crashed as primary: its activity-log extents, for the sync source.
    std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> recovered_extents_;
    std::size_t awaiting_peer_extents_ = 0;  // source: EXTENTS still to come before resyncing

    // The last handshake found a split brain: what each side wrote alone since the shared
    // generation. Kept (status "split_brain") until a handshake succeeds.
    struct SplitBrainReport {
        std::string peer_node;
        std::uint64_t local_changed_bytes = 0;
        std::optional<std::uint64_t> peer_changed_bytes;  // unknown from a peer without the trailer
        std::uint64_t since_generation = 0;
        bool kept_here = false;  // the operator's forced promotion chose this copy
    };
    std::optional<SplitBrainReport> split_brain_;
    // Bytes the dirty maps hold: what this node wrote since its bitmap generation.
    std::uint64_t changed_bytes() const;
    // A split brain at the handshake: the policy's resolution (kind becomes a full resync
    // source or target) or the refusal reason naming both sides' changes.
    std::string resolve_split_brain(const peer::Hello& hello, meta::SyncDecision& decision);

    // Peer as seen at the last handshake.
    std::string peer_node_;
    meta::DataState peer_data_state_ = meta::DataState::Unknown;
    meta::Generations peer_generations_;

    // Resync progress.
    std::size_t resync_export_ = 0;
    std::uint64_t resync_cursor_ = 0;
    std::size_t resync_in_flight_ = 0;
    std::uint64_t resync_epoch_ = 0;  // bumps at every start_resync()
    std::uint64_t resync_total_ = 0;
    std::uint64_t resync_sent_ = 0;               // bytes sent in this resync
    std::uint64_t resync_unflushed_ = 0;          // bytes cleared since the last commit
    Clock::time_point resync_started_{};
    double resync_budget_ = 0;                    // token bucket for config_.resync_rate
    Clock::time_point resync_refilled_{};
    std::unique_ptr<asio::steady_timer> resync_timer_;

    // Counters.
    std::uint64_t bytes_replicated_ = 0;
    std::uint64_t bytes_sent_zero_copy_ = 0;  // payload bytes lent to the socket (send_thread.h)
    std::uint64_t bytes_resynced_ = 0;
    std::uint64_t writes_recorded_dirty_ = 0;

    std::unique_ptr<VerifyRun> verify_;
    std::vector<HeldWrite> held_;
    // Fencing (ReplicatorConfig::fence): set when the link is lost while primary; the replies of
    // writes recorded dirty since wait in fenced_ until release_fence() or a reconnect.
    bool fencing_ = false;
    std::optional<std::chrono::steady_clock::time_point> write_deadline_;  // set_write_lease()
    bool write_lease_ended_logged_ = false;
    bool alone_started_here_ = false;  // this process began the current alone generation
    bool alone_acked_ = false;         // and acknowledged a write of it
    struct FencedReply {
        std::function<void(vmha::Status)> done;
        vmha::Status status;
    };
    std::vector<FencedReply> fenced_;
    void end_fence(const std::string& why);
    void fail_fenced(const std::string& why);
    meta::Generations hello_generations_;  // what this node's last HELLO said
    std::function<void()> stop_done_;
    bool stopping_ = false;
};

}  // namespace imagesync::replication
