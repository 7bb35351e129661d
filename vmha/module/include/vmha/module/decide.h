// The mirror module's decision: what one node knows, in; the state it should be in, out.
//
// vmhad never reacts to an event directly. Whenever anything changes (a peer report, a
// heartbeat verdict, imagesync's status, a checker, an operator command, a timer) the module
// runner takes a Snapshot of everything this node knows and calls decide(). The result names
// the state to be in, the rule that chose it and why, and the two coordination outputs below.
// Being level-triggered, a lost or repeated message can delay a decision but never make a
// wrong one: the next snapshot decides again from scratch.
//
// Two nodes must never both run the VM while they can reach each other. A node that is not
// running the VM starts it only
//   - when the peer is lost on every heartbeat path (rule 54), or was never heard since start
//     while this node was the last to run the VM alone (rule 55), or
//   - with the peer's *grant*: an idle node that should run the VM sends a claim (a fresh id,
//     repeated in each of its reports); the peer answers with a grant of that id only while it
//     does not run the VM itself, does not compete for it (the preferred node wins a tie), and
//     its generations show the claimant's copy as new as its own; it holds back from running
//     as long as its grant stands. The claimant starts the VM only
//     once it reads its own claim id in the peer's grant (rule 60), or
//   - by the operator's choice (`vmha prim`, rule 62), never beside a peer that reports running
//     it, and only once any grant this node gave the peer is withdrawn.
// `vmha failover off` and `vmha second` take the first way away from an idle node, and the
// claims for a VM the peer gave up (unfit, stopped); `second` every claim but on a hand-over
// (rule 64).
// And only an UpToDate copy may ever start the VM: rule 53 stands before every rule that
// starts it (rule 62, before it, checks the same), and check_may_start_vm() is the one check the runner makes again just before it
// acts.
//
// Rules, evaluated top to bottom; the first that matches decides ("cur" = current state,
// "runs" = ALONE or PRIM, "eligible peer" = alive, reporting SECOND or WAIT, UpToDate, fit,
// and in sync with this node):
//
// | rule | when                                                     | next                     |
// |------|----------------------------------------------------------|--------------------------|
// |  10  | the operator stopped the module                          | STOP                     |
// |  20  | runs, imagesyncd not answering                           | cur (the VM waits)       |
// |  21  | imagesyncd not answering                                 | WAIT                     |
// |  30  | not running, the peer refused to pair (config differs)   | WAIT                     |
// |  40  | runs, a "wait" checker failed: node unfit                | WAIT (VM stopped)        |
// |  41  | runs, the peer reports running too (healed partition)    | preferred: cur; else WAIT|
// |      |   (this node's VM paused with its disks lost: WAIT); or  |                          |
// |      |   imagesync reports split brain                          |                          |
// |  42  | runs, failover wanted (failover checker, or VM failed    | SECOND, hand over        |
// |      |   with no restart left), eligible peer, failover on      |                          |
// |  43  | runs, the VM failed, a restart is left in the window     | cur, restart the VM      |
// |      |   (imagesync not primary yet: cur, wait for it first)    |                          |
// |  44  | runs, the VM failed, no restart left, no eligible peer   | WAIT                     |
// |      |   (or failover off)                                      |                          |
// |  45  | runs, failover checker failed, no eligible peer (or      | cur                      |
// |      |   failover off)                                          |                          |
// |  46  | runs, the operator asked for a swap, eligible peer       | SECOND, hand over        |
// |  47  | runs, automatic failback due, eligible peer              | SECOND, hand over        |
// |  48  | runs, the peer receives every write                      | PRIM                     |
// |  49  | runs                                                     | ALONE                    |
// |  62  | (evaluated first) the operator chose this node to run    | ALONE / PRIM (WAIT while |
// |      |   the VM (`vmha prim`), the data here UpToDate (after a  |   a grant to the peer    |
// |      |   forced promotion with --force), the peer not running it|   stands)                |
// |  50  | imagesync reports split brain                            | WAIT                     |
// |  51  | a "wait" checker failed, or the VM failed here with no   | WAIT                     |
// |      |   restart left: node unfit                               |                          |
// |  52  | the peer reports running the VM                          | SECOND                   |
// |  63  | (evaluated here) neither copy ever held data (both       | WAIT; this node's images |
// |      |   JustCreated), the channel up, this node preferred      |   become the initial data|
// |  53  | data here not UpToDate; or the generations show the      | WAIT                     |
// |      |   peer's copy newer, or both diverged                    |                          |
// | 53b  | imagesyncd just (re)started, not yet connected           | WAIT (it may find the    |
// |      |                                                          |   peer's still primary)  |
// |  64  | this node may not take the VM over: failover is off, or  | WAIT                     |
// |      |   the operator started it as secondary (`vmha second`),  |                          |
// |      |   and the peer is lost, silent since start, unfit or     |                          |
// |      |   stopped (`second`: or this node is preferred)          |                          |
// |  54  | the peer lost on every heartbeat path, and this copy was | ALONE                    |
// |      |   as new as the peer's when it was last heard (and, with | (else WAIT)              |
// |      |   a witness, the peer did not renew its lease since)     |                          |
// |  55  | peer silent since start, this node last ran it alone     | ALONE                    |
// |  56  | peer not heard since start                               | WAIT                     |
// |  57  | peer alive, its module state unknown (channel down)      | WAIT                     |
// |  58  | this node granted the peer's claim (evaluated before 53b)| SECOND                   |
// |  59  | this node handed the VM over, the peer not running yet   | SECOND                   |
// |      |   (with the channel up: evaluated before 53b too)        |                          |
// |  60  | this node should run it (peer handing over, not UpToDate,| with the grant: ALONE;   |
// |      |   unfit, stopped, or both fit and this node preferred)   | else SECOND, claim       |
// |      |   and the generations show this copy the same or newer   | (unknown: WAIT, no claim)|
// |  61  | otherwise (the peer should run it)                       | SECOND                   |
//
// With a witness (the module's `witness` section), two more rules filter the result of the
// table above (docs/witness.md, "What vmhad does with the lease"). "Lease held" = this node's
// pessimistic view of the lease (lease::LeaseView) holds now; "the peer agrees" = the channel is
// up and the peer's last report, received within the agreement window, says it neither runs the
// VM, nor serves its disks writable, nor contends for the lease:
//
// | rule | when                                                     | next                     |
// |------|----------------------------------------------------------|--------------------------|
// |  65  | runs (and would keep running), the lease not held and    | WAIT (self-fence: stop   |
// |      |   the peer not in agreement                              |   writing, stop the VM)  |
// |  66  | would start the VM, but neither holds the lease with the | WAIT, contend for the    |
// |      |   hold-off over (no agreeing report sent for that long)  |   lease                  |
// |      |   nor starts with the peer's grant while it agrees (60)  |                          |
//
// With a fencing hook (the module's `fencing` section), applied after rules 65 and 66:
//
// | rule | when                                                     | next                     |
// |------|----------------------------------------------------------|--------------------------|
// |  67  | would start the VM while the peer is not alive on a      | WAIT, run the hook (again|
// |      |   working channel, and the hook has not fenced the peer  |   10 s after a failure)  |
// |      |   since it was last heard                                |                          |
//
// Threading: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <vmha/error.h>
#include <vmha/module/state.h>

namespace vmha::module {

// What the peer's vmhad last reported about the module (valid while the channel is up).
// This node's copy against the peer's, from both generation records (imagesync's decide()).
enum class Standing : std::uint8_t { unknown, same, ahead, behind, diverged };
std::string_view to_string(Standing standing);

struct PeerReport {
    State state = State::wait;
    DataState data = DataState::unknown;
    bool fit = true;              // no "wait" checker failed there
    std::uint64_t claim = 0;      // its claim id: it asks to run the VM; 0 = none
    std::uint64_t grant = 0;      // the claim id of ours it grants; 0 = none
    bool handing_over = false;    // it stopped the VM to hand it to this node
    bool contending = false;      // with a witness: it contends for the lease (or runs by it)
    bool writable = false;        // its imagesyncd serves the disks writable
    bool disks_lost = false;      // its VM is paused on an I/O error, its imagesync restarted:
                                  // it cannot write, and will not resume unless it may
    bool runs() const { return (state == State::alone || state == State::prim) && !disks_lost; }
};

struct Snapshot {
    std::string self;   // node names, for reasons
    std::string peer;
    State current = State::stop;
    bool started = false;  // the operator's intent (persisted)

    // imagesync
    bool imagesync_up = false;
    bool imagesync_primary = true;  // imagesyncd serves the disks writable (a restarted one is
                                    // secondary until promoted again)
    bool imagesync_settling = false;  // just (re)started: it has not had time to reach the peer's
    DataState data = DataState::unknown;
    Link link = Link::down;
    Standing standing = Standing::unknown;  // against the peer's reported generations
    bool fresh_pair = false;  // neither copy ever held data (both generations JustCreated)

    // the peer
    Liveness liveness = Liveness::unknown;
    bool silent_since_start = false;  // liveness unknown for longer than the startup grace
    // When the peer was last heard, this copy was known to be as new as the peer's: connected
    // in sync, or the peer idle with generations showing this copy the same or newer.
    bool current_when_lost = false;
    bool channel_up = false;
    std::optional<PeerReport> report;      // only while the channel is up
    std::optional<std::string> refused;    // the pairing was refused, and why

    // persisted: the last time this node ran the VM, the peer was lost (ALONE)
    bool may_start_alone = false;
    bool preferred = false;  // wins ties (failback.preferred_node, else the first node listed)

    // coordination (see the narrative above)
    std::uint64_t own_claim = 0;        // our standing claim id; 0 = none
    std::uint64_t granted_to_peer = 0;  // the peer's claim id we granted; 0 = none
    bool handing_over = false;          // we stopped the VM to hand it to the peer

    // checkers and the operator
    std::optional<std::string> unfit;      // a "wait" checker failed: why
    std::optional<std::string> failover;   // a "failover" checker failed: why
    std::optional<std::string> vm_failed;  // the VM failed while it should run: why
    bool vm_disks_lost = false;  // the VM is paused on an I/O error and imagesync restarted as secondary
    bool restart_left = true;              // the restart budget allows one more restart
    bool swap_requested = false;
    bool failback_due = false;  // automatic failback: the preferred peer is ready, stable
    // `vmha failover off` (persisted): this node never takes the VM over from its peer, and
    // never hands it over but by an operator's swap.
    bool failover_off = false;
    bool operator_prim = false;    // `vmha prim`: run the VM here (until it runs, or stop)
    bool operator_second = false;  // `vmha second`: wait for the peer to run it (until it does)

    // the witness (rules 65 and 66); all false without one
    bool witness = false;        // the module has a witness section
    bool lease_held = false;     // this node certainly holds the lease now (margin counted)
    bool peer_agrees = false;    // see the rules' narrative
    bool hold_off_done = false;  // no agreeing report sent for the hold-off: the peer has stopped
                                 // writing on our word, if it ever did
    std::string lease_why;       // what the witness last said, or why it was not asked
    bool peer_renewed_since_lost = false;  // the witness said the peer renewed the lease after
                                           // this node lost it: it went on alone (rule 54)

    // the fencing hook (rule 67); fence_hook false without one
    bool fence_hook = false;
    bool peer_fenced = false;  // the hook succeeded since the peer was last heard
    std::optional<std::string> fence_failed;  // the hook's last failure, while it waits to retry
};

struct Decision {
    State next = State::wait;
    int rule = 0;
    std::string reason;
    bool restart_vm = false;  // rule 43: restart the VM where it is
    bool hand_over = false;   // rules 42, 46, 47: stop the VM, demote, let the peer take it
    bool claim = false;       // rule 60: ask the peer's grant (a fresh id if none stands)
    bool declare_initial = false;  // rule 63: declare this node's images the initial data
    bool contend = false;     // with a witness: acquire the lease (rule 66, or starting by it)
    bool run_fence = false;   // rule 67: run the fencing hook (unless it runs, or waits to retry)
    bool power_off = false;   // rule 65: the VM is destroyed at once, no graceful shutdown
    std::uint64_t grant = 0;  // the peer's claim id this node grants now; 0 = none
};

// The "eligible peer" of the table: it could take the VM over from this node now.
bool peer_eligible(const Snapshot& s);

Decision decide(const Snapshot& s);

// The one check before the VM is started anywhere: refused (not_up_to_date) unless the data
// here is UpToDate. decide() never chooses to start the VM otherwise; the runner checks again
// with the data state it reads just before acting.
Status check_may_start_vm(DataState data, const std::string& module, const std::string& node);

}  // namespace vmha::module
