// Per-export ordering of overlapping writes.
//
// Every write (WRITE, WRITE_ZEROES, TRIM) takes a ticket for its byte range when its request
// is read off the socket, i.e. in arrival order. A ticket is granted once no earlier ticket
// that overlaps it is still held; so overlapping writes are applied one after the other in
// arrival order, and non-overlapping writes run in parallel. Replication depends on this: the
// replica must apply overlapping writes in the same order as the local disk.
//
// Owned by the event loop thread. Wake-ups are posted, never run inside release().
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <vector>

#include "asio.h"

namespace imagesync {

class IntervalLock {
    struct Entry {
        std::uint64_t begin = 0;
        std::uint64_t end = 0;  // exclusive
        bool granted = false;
        std::function<void()> on_grant;
        std::size_t slot = 0;  // its place in ranges_
    };

  public:
    using Ticket = std::list<Entry>::iterator;

    explicit IntervalLock(asio::any_io_executor executor) : executor_(std::move(executor)) {}

    // Takes a place in line for [offset, offset + length).
    Ticket enqueue(std::uint64_t offset, std::uint64_t length);
    // Runs `on_grant` (posted) once the ticket is granted; at most one waiter per ticket.
    void when_granted(Ticket ticket, std::function<void()> on_grant);
    bool granted(Ticket ticket) const { return ticket->granted; }
    // Gives the range back (or withdraws a ticket never granted, e.g. when its request failed
    // early) and grants the tickets that no longer conflict.
    void release(Ticket ticket);

    std::size_t size() const { return entries_.size(); }

  private:
    bool conflicts_with_earlier(Ticket ticket) const;
    bool conflicts_with_any(std::uint64_t begin, std::uint64_t end) const;

    asio::any_io_executor executor_;
    std::list<Entry> entries_;  // arrival order
    std::list<Entry> spare_;    // released entries, reused: no allocation per write
    std::size_t waiting_ = 0;   // entries not granted: release() has nothing to grant without
    // The ranges of entries_, packed (in no order): enqueue() checks a new ticket against every
    // held one, and a scan of this array costs a fraction of a walk along the list's nodes.
    struct Held {
        std::uint64_t begin = 0;
        std::uint64_t end = 0;
        Ticket ticket;
    };
    std::vector<Held> ranges_;
};

}  // namespace imagesync
