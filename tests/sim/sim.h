// A deterministic simulation of one mirror module on two nodes (SPEC §8.2).
//
// The real ModuleRunner and decide() run on both nodes; everything around them is simulated
// on one virtual clock, from one seed: the network (heartbeat paths, the control channel,
// the replication link, with delays, loss and partitions), imagesyncd (its role, its
// generation records through imagesync's real decide(), its copy of the data as the list of
// writes it holds), the hypervisor (the VM runs on a node and writes while it runs), and the
// faults (node crashes, vmhad and imagesyncd crashes, VM crashes, partitions, operator
// commands). Nothing depends on wall-clock time or thread scheduling, so a seed replays
// exactly, with its trace.
//
// Invariants checked as it runs and at its end:
//   - never two nodes running the VM while the network between them is whole;
//   - never a VM started on a copy that lacks a write acknowledged to the guest (writes made
//     while the nodes were fully partitioned, or while both ran the VM, are split brain and
//     reported as such, not as a violation: a witness is what prevents them);
//   - once faults stop, every module settles: no transition in the final minute, one node
//     runs the VM, and the two copies are identical when the pair is connected.
//
// With a witness (Options::witness), a third party joins: a simulated vmha-witness with its
// own lease table and its own clock, reached over links that can be cut per direction and
// lose messages, restarting now and then with its grants kept (docs/witness.md). Every node's
// clock then runs at its own rate (within +-0.5 % of true time, so any two clocks differ by
// less than the 1 % the lease timing allows), and imagesyncd keeps a write deadline. The
// invariant that the witness buys is checked after every event:
//   - at no instant do two nodes both accept writes for the module (imagesyncd primary, up,
//     and within its write deadline).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vmha::sim {

enum class Scenario {
    random_faults,  // seeded random faults for fault_seconds
    primary_crash,  // no random faults: the node running the VM crashes at 20 s; the other
                    // must run it within 20 s, and the crashed node rejoins at 60 s
    partition,      // with a witness, no random faults: at 20 s, for 40 s, one combination
                    // (Options::partition, 0..31) of the node-node network (whole or cut) and
                    // each node's link to the witness (whole, cut towards it, cut from it, both)
};

// The partition scenario's combination `c` in words.
std::string describe_partition(int c);

struct Options {
    std::uint64_t seed = 1;
    Scenario scenario = Scenario::random_faults;
    int fault_seconds = 300;    // faults are injected during this much virtual time
    int settle_seconds = 180;   // then the network heals, every node is up, and it must settle
    bool trace = false;         // keep the full trace (else only the last lines)
    bool witness = false;       // a witness holds the module's lease (see above)
    int partition = 0;          // Scenario::partition: which combination
    bool lease_rules = true;    // false: the witness runs, but vmhad ignores it (to show that
                                // the invariant catches what the lease rules prevent)
};

struct Outcome {
    std::vector<std::string> violations;
    std::vector<std::string> trace;  // the last lines of the trace (all with Options::trace)
    int transitions = 0;
    int faults = 0;
    int vm_starts = 0;
    int acked_writes = 0;
    int split_brains = 0;  // writes made while both nodes ran the VM in a full partition
    std::string final_state;  // e.g. "hv1 PRIM, hv2 SECOND"
    // with a witness
    int partitions = 0;        // cuts injected (node-node or node-witness, either direction)
    int witness_restarts = 0;
    int lease_grants = 0;      // grants anew (a new epoch)
    int self_fences = 0;       // a running node stopped writing for want of the lease
    int lease_refusals = 0;    // a node that would have started the VM waited for the lease
    int stale_starts = 0;      // VM starts on a copy lacking writes acknowledged in a partition
};

Outcome run(const Options& options);

}  // namespace vmha::sim
