// The TCP congestion control of the replication connection.
//
// The link carries synchronous traffic: a write's reply waits for its frame to reach the peer,
// so what matters is the delay of each burst, not fairness to other flows on a shared path.
// imagesyncd therefore sets the algorithm on its own sockets (TCP_CONGESTION) instead of taking
// the kernel's default, which some distributions and cloud images set to bbr. bbr paces every
// flow; on a host without the fq qdisc the kernel paces itself with a timer per flow, which can
// send from the timer's CPU as well as from the sending thread's. Measured on this machine
// (default bbr, loopback; docs/imagesync.md, "Congestion control of the link"): the primary's
// segments then reached the secondary out of order (766-1 098 segments queued out of order
// and 162-322 spurious fast retransmits per 6 s run of 1M writes, against 14-30 and 2-13 with
// cubic), and replicated 1M writes ran about 21 % faster with cubic (three interleaved pairs
// of pairs); 4k writes did not change.
// The default is "cubic", Linux's own default; "system" keeps the kernel's.
#pragma once

#include <string>
#include <string_view>

#include <vmha/error.h>

namespace imagesync::replication {

// ReplicatorConfig::tcp_congestion's value for "leave the kernel's default alone".
inline constexpr std::string_view kSystemCongestion = "system";

// Whether this process can set `name` on a TCP socket on this kernel: the name's form, then a
// setsockopt on a throwaway socket (which also loads a module the kernel has, for root). The
// error names what the kernel offers (tcp_available_congestion_control) and, when the name
// is there but refused, what an unprivileged process may use (tcp_allowed_congestion_control).
// kSystemCongestion is always accepted.
vmha::Status check_congestion_control(std::string_view name);

// Sets `name` on the TCP socket `fd`; kSystemCongestion leaves it as it is.
vmha::Status set_congestion_control(int fd, std::string_view name);

// The algorithm socket `fd` uses, or "" if the kernel does not say.
std::string congestion_control(int fd);

}  // namespace imagesync::replication
