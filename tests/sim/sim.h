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
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vmha::sim {

enum class Scenario {
    random_faults,  // seeded random faults for fault_seconds
    primary_crash,  // no random faults: the node running the VM crashes at 20 s; the other
                    // must run it within 20 s, and the crashed node rejoins at 60 s
};

struct Options {
    std::uint64_t seed = 1;
    Scenario scenario = Scenario::random_faults;
    int fault_seconds = 300;    // faults are injected during this much virtual time
    int settle_seconds = 180;   // then the network heals, every node is up, and it must settle
    bool trace = false;         // keep the full trace (else only the last lines)
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
};

Outcome run(const Options& options);

}  // namespace vmha::sim
