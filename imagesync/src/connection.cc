#include "connection.h"

#include <array>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nbd_protocol.h"
#include "negotiation.h"

namespace imagesync {

namespace {

using boost::system::error_code;

// Awaits a callback-style operation `start(done)` whose `done(vmha::Status)` runs later on
// the loop thread. The result is posted, so completion never resumes inside `start`.
template <typename Start>
asio::awaitable<vmha::Status> completion_of(Start start) {
    auto executor = co_await asio::this_coro::executor;
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(vmha::Status)>(
        [start = std::move(start), executor](auto handler) mutable {
            auto shared = std::make_shared<decltype(handler)>(std::move(handler));
            start([shared, executor](vmha::Status s) {
                asio::post(executor,
                           [shared, s = std::move(s)]() mutable { (*shared)(std::move(s)); });
            });
        },
        asio::use_awaitable);
}

// The data a request makes the daemon hold: a WRITE's payload or a READ's reply.
std::uint64_t payload_bytes(const nbd::Request& r) {
    return r.type == nbd::kCmdWrite || r.type == nbd::kCmdRead ? r.length : 0;
}

bool is_disconnect(const error_code& ec) {
    return ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
           ec == asio::error::broken_pipe;
}

nbd::ByteView view(const nbd::Bytes& b) {
    return {b.data(), b.size()};
}

}  // namespace

Connection::Signal::Signal(const asio::any_io_executor& executor)
    : timer_(executor, asio::steady_timer::time_point::max()) {}

void Connection::Signal::notify() {
    if (waiting_) timer_.cancel();
}

asio::awaitable<void> Connection::Signal::wait() {
    timer_.expires_at(asio::steady_timer::time_point::max());
    error_code ec;
    waiting_ = true;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    waiting_ = false;
}

Connection::Connection(std::uint64_t id, Socket socket, std::span<Export* const> exports,
                       OnClosed on_closed)
    : id_(id),
      socket_(std::move(socket)),
      exports_(exports),
      on_closed_(std::move(on_closed)),
      reader_wake_(socket_.get_executor()) {
    batch_.reserve(kMaxRepliesPerSend);
    buffers_.reserve(2 * kMaxRepliesPerSend);
    spare_heads_.reserve(kMaxRepliesPerSend);  // replies_sent() then never allocates
}

void Connection::start() {
    auto self = shared_from_this();
    asio::co_spawn(socket_.get_executor(), run(self), asio::detached);
}

void Connection::stop() {
    if (stopping_) return;
    stopping_ = true;
    error_code ignored;
    if (negotiating_) {
        socket_.close(ignored);  // nothing was read yet that would need an answer
    } else {
        socket_.shutdown(Socket::shutdown_receive, ignored);  // the reader sees end of file
    }
    reader_wake_.notify();
}

void Connection::abort() {
    stopping_ = true;
    broken_ = true;
    error_code ignored;
    socket_.close(ignored);  // an outstanding reply write ends with an error
    reader_wake_.notify();
}

asio::awaitable<void> Connection::run(std::shared_ptr<Connection> self) {
    spdlog::debug("connection {}: accepted", id_);
    asio::steady_timer deadline(socket_.get_executor());
    deadline.expires_after(kHandshakeTimeout);
    deadline.async_wait([this, self](const error_code& ec) {
        if (ec || !negotiating_) return;
        spdlog::warn("connection {}: closing: negotiation did not finish within {} s", id_,
                     kHandshakeTimeout.count());
        error_code ignored;
        socket_.close(ignored);
    });
    bool failed = false;
    try {
        const bool ok = co_await negotiate();
        negotiating_ = false;
        deadline.cancel();
        if (ok && !stopping_) {
            co_await transmit(self);
        } else if (ok) {
            spdlog::info("connection {}: closing after negotiation: imagesyncd is stopping", id_);
        }
    } catch (const std::exception& e) {
        // Not expected (allocation failure): close this connection, keep the daemon.
        spdlog::error("connection {}: closing after an unexpected failure: {}", id_, e.what());
        failed = true;
    }
    if (failed) {
        negotiating_ = false;
        deadline.cancel();
        abort();
        while (in_flight_ > 0 || writer_busy()) {
            co_await reader_wake_.wait();
        }
    }
    error_code ignored;
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
    spdlog::info("connection {}: closed", id_);
    on_closed_(id_);
}

asio::awaitable<bool> Connection::negotiate() {
    std::vector<nbd::ExportInfo> infos;
    infos.reserve(exports_.size());
    for (const Export* e : exports_) infos.push_back(e->info());
    nbd::Negotiator negotiator(std::move(infos));

    error_code ec;
    const nbd::Bytes greeting = nbd::encode_greeting();
    co_await asio::async_write(socket_, asio::buffer(greeting),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;

    std::array<std::byte, 4> flags{};
    co_await asio::async_read(socket_, asio::buffer(flags),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;
    if (auto s = negotiator.accept_client_flags(flags); !s) {
        spdlog::warn("connection {}: closing: {}", id_, s.error().message);
        co_return false;
    }

    for (;;) {
        std::array<std::byte, nbd::kOptionHeaderSize> header{};
        co_await asio::async_read(socket_, asio::buffer(header),
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec) {
            if (!is_disconnect(ec)) {
                spdlog::warn("connection {}: reading an option failed: {}", id_, ec.message());
            }
            co_return false;
        }
        auto option = nbd::parse_option_header(header);
        if (!option) {
            spdlog::warn("connection {}: closing: {}", id_, option.error().message);
            co_return false;
        }
        if (option->length > nbd::kMaxOptionLength) {
            spdlog::warn(
                "connection {}: closing: option {} carries {} bytes, more than the "
                "limit of {}",
                id_, option->option, option->length, nbd::kMaxOptionLength);
            co_return false;
        }
        nbd::Bytes data(option->length);
        co_await asio::async_read(socket_, asio::buffer(data),
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return false;

        nbd::Negotiator::Step step = negotiator.handle_option(option->option, view(data));
        if (!step.reply.empty()) {
            co_await asio::async_write(socket_, asio::buffer(step.reply),
                                       asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return false;
        }
        switch (step.next) {
            case nbd::Negotiator::Next::read_option:
                if (!step.reason.empty()) {
                    spdlog::debug("connection {}: option {} refused: {}", id_, option->option,
                                  step.reason);
                }
                break;
            case nbd::Negotiator::Next::close:
                spdlog::info("connection {}: closing during negotiation: {}", id_, step.reason);
                co_return false;
            case nbd::Negotiator::Next::transmission: {
                const nbd::Negotiated& n = negotiator.negotiated();
                export_ = exports_[n.export_index];
                context_ = nbd::RequestContext{.export_size = export_->info().size,
                                               .transmission_flags = n.transmission_flags,
                                               .structured_replies = n.structured_replies,
                                               .base_allocation = n.base_allocation};
                spdlog::info(
                    "connection {}: serving export \"{}\" (flags {:#x}, structured "
                    "replies {}, base:allocation {})",
                    id_, export_->info().name, n.transmission_flags,
                    n.structured_replies ? "on" : "off", n.base_allocation ? "on" : "off");
                co_return true;
            }
        }
    }
}

asio::awaitable<void> Connection::transmit(std::shared_ptr<Connection> self) {
    for (;;) {
        while ((in_flight_ >= kMaxInFlight || bytes_in_flight_ >= kMaxBytesInFlight) &&
               !stopping_) {
            co_await reader_wake_.wait();
        }
        if (stopping_) break;

        std::array<std::byte, nbd::kRequestHeaderSize> header;
        error_code ec;
        if (!reader_.try_take(header)) ec = co_await reader_.read_exact(header);
        if (ec) {
            if (!is_disconnect(ec)) {
                spdlog::warn("connection {}: reading a request failed: {}", id_, ec.message());
            } else if (!stopping_) {
                spdlog::debug("connection {}: the client closed the connection", id_);
            }
            break;
        }
        auto request = nbd::parse_request_header(header);
        if (!request) {
            spdlog::warn("connection {}: closing: {}", id_, request.error().message);
            break;
        }
        if (request->type == nbd::kCmdDisc) {
            spdlog::debug("connection {}: the client disconnects", id_);
            break;
        }
        if (auto s = nbd::check_payload_length(*request); !s) {
            spdlog::warn("connection {}: closing: {}", id_, s.error().message);
            break;
        }
        Buffer payload;
        if (request->type == nbd::kCmdWrite) {
            payload = pool_.take(request->length);
            if (!reader_.try_take(payload.span())) ec = co_await reader_.read_exact(payload.span());
            if (ec) {
                spdlog::debug("connection {}: the connection ended inside a WRITE payload", id_);
                break;
            }
        }
        vmha::Status verdict = nbd::check_request(*request, context_);
        std::optional<IntervalLock::Ticket> ticket;
        const bool modifies = request->type == nbd::kCmdWrite ||
                              request->type == nbd::kCmdWriteZeroes ||
                              request->type == nbd::kCmdTrim;
        if (verdict && modifies) {
            ticket = export_->locks().enqueue(request->offset, request->length);
        }
        spdlog::trace("connection {}: {} cookie {:#x} offset {} length {} flags {:#x}", id_,
                      nbd::command_name(request->type), request->cookie, request->offset,
                      request->length, request->flags);
        ++in_flight_;
        bytes_in_flight_ += payload_bytes(*request);
        if (ticket) {  // a write that passed its checks
            start_write(self, *request, std::move(payload), *ticket);
            continue;
        }
        if (verdict && request->type == nbd::kCmdFlush) {
            start_write(self, *request, {}, std::nullopt);
            continue;
        }
        try {
            asio::co_spawn(socket_.get_executor(),
                           serve(self, *request, std::move(payload), std::move(verdict)),
                           asio::detached);
        } catch (...) {  // the request never started
            --in_flight_;
            bytes_in_flight_ -= payload_bytes(*request);
            throw;
        }
    }

    // Answer what was read, then let the writer drain the queue.
    while (in_flight_ > 0) co_await reader_wake_.wait();
    closing_ = true;
    while (writer_busy()) co_await reader_wake_.wait();
    replies_.clear();  // undelivered if the socket broke
}

void Connection::schedule_send() {
    if (writer_busy() || broken_) return;
    if (in_flight_ <= 1) {  // the last request in flight is answered: nothing else can join
        send_replies();
        return;
    }
    send_posted_ = true;
    // Posted, not sent here: completions handled in the same turn of the loop join the
    // gathered write.
    asio::post(socket_.get_executor(), [self = shared_from_this()] {
        self->send_posted_ = false;
        self->send_replies();
    });
}

void Connection::send_replies() {
    if (broken_ || replies_.empty()) {
        reader_wake_.notify();  // shutdown may be waiting for the writer
        return;
    }
    // Everything queued so far (in queue order) goes out in one gathered write.
    while (!replies_.empty() && batch_.size() < kMaxRepliesPerSend) {
        batch_.push_back(std::move(replies_.front()));
        replies_.pop_front();
        const Reply& r = batch_.back();
        buffers_.emplace_back(r.head.data(), r.head.size());
        if (!r.body.empty()) buffers_.emplace_back(r.body.data(), r.body.size());
    }
    try {
        asio::async_write(socket_, buffers_,
                          [self = shared_from_this()](const error_code& result, std::size_t) {
                              self->replies_sent(result);
                          });
        sending_ = true;
    } catch (const std::exception& e) {  // not expected (allocation failure): this connection only
        spdlog::error("connection {}: sending replies failed unexpectedly: {}", id_, e.what());
        broken_ = true;
        error_code ignored;
        socket_.close(ignored);  // the reader stops too
        replies_sent({});
    }
}

void Connection::replies_sent(const error_code& ec) {
    sending_ = false;
    for (Reply& r : batch_) {
        pool_.give(std::move(r.body));
        if (r.head.capacity() <= kSpareHeadBytes && spare_heads_.size() < kMaxRepliesPerSend) {
            r.head.clear();
            spare_heads_.push_back(std::move(r.head));
        }
    }
    batch_.clear();
    buffers_.clear();
    if (ec && !broken_) {
        if (!is_disconnect(ec)) {
            spdlog::warn("connection {}: sending a reply failed: {}", id_, ec.message());
        }
        broken_ = true;
        error_code ignored;
        socket_.close(ignored);  // the reader stops too
    }
    if (broken_) replies_.clear();
    send_replies();  // what was queued meanwhile, or tell a waiting shutdown the writer is idle
}

void Connection::queue(Reply reply) {
    if (broken_) return;
    if (closing_) vmha::internal_error("a reply was queued after the connection closed");
    replies_.push_back(std::move(reply));
    schedule_send();
}

void Connection::reply_ok(const nbd::Request& request) {
    // A reply per write: a head sent before is reused, sparing an allocation.
    nbd::Bytes head;
    if (!spare_heads_.empty()) {
        head = std::move(spare_heads_.back());
        spare_heads_.pop_back();
    }
    nbd::encode_simple_reply(request.cookie, 0, head);
    queue({std::move(head), {}});
}

void Connection::reply_error(const nbd::Request& request, const vmha::Error& error) {
    const std::uint32_t wire = nbd::nbd_error_from(error);
    if (wire == nbd::kEio) {
        spdlog::error("connection {}: export \"{}\": {}", id_, export_->info().name, error.message);
    } else {
        spdlog::debug("connection {}: {} refused with NBD error {}: {}", id_,
                      nbd::command_name(request.type), wire, error.message);
    }
    const bool structured = context_.structured_replies &&
                            (request.type == nbd::kCmdRead || request.type == nbd::kCmdBlockStatus);
    if (structured) {
        queue({nbd::encode_error_chunk(request.cookie, wire, error.message), {}});
    } else {
        queue({nbd::encode_simple_reply(request.cookie, wire), {}});
    }
}

asio::awaitable<void> Connection::serve(std::shared_ptr<Connection> self, nbd::Request request,
                                        Buffer payload, vmha::Status verdict) {
    vmha::Status status = std::move(verdict);
    if (status) {
        try {
            status = co_await dispatch(request);
        } catch (const std::exception& e) {  // e.g. std::bad_alloc: fail the request only
            status = vmha::Error(vmha::errc::io_error, fmt::format("{} at offset {} failed: {}",
                                                                   nbd::command_name(request.type),
                                                                   request.offset, e.what()));
        }
    }
    if (!status) reply_error(request, status.error());
    pool_.give(std::move(payload));
    --in_flight_;
    bytes_in_flight_ -= payload_bytes(request);
    reader_wake_.notify();
    (void)self;
}

asio::awaitable<vmha::Status> Connection::dispatch(const nbd::Request& request) {
    vmha::Status status;
    {
        switch (request.type) {
            case nbd::kCmdRead: {
                Buffer data = pool_.take(request.length);
                status = co_await completion_of([&](ImageFile::Done done) {
                    export_->file().read(request.offset, data.span(), std::move(done));
                });
                if (status) {
                    nbd::Bytes head = context_.structured_replies
                                          ? nbd::encode_offset_data_header(
                                                request.cookie, request.offset, request.length)
                                          : nbd::encode_simple_reply(request.cookie, 0);
                    queue({std::move(head), std::move(data)});
                } else {
                    pool_.give(std::move(data));
                }
                break;
            }
            case nbd::kCmdWrite:
            case nbd::kCmdWriteZeroes:
            case nbd::kCmdTrim:
            case nbd::kCmdFlush:
                vmha::internal_error("a checked write or flush reached the coroutine path");
            case nbd::kCmdCache:
                status = co_await completion_of([&](ImageFile::Done done) {
                    export_->file().cache(request.offset, request.length, std::move(done));
                });
                if (status) reply_ok(request);
                break;
            case nbd::kCmdBlockStatus:
                status = serve_block_status(request);
                break;
            default:
                vmha::internal_error(
                    fmt::format("request type {} passed check_request", request.type));
        }
    }
    co_return status;
}

namespace {

WriteOp write_op_of(const nbd::Request& request, const Buffer& payload) {
    WriteOp op;
    op.offset = request.offset;
    op.length = request.length;
    op.fua = (request.flags & nbd::kCmdFlagFua) != 0;
    switch (request.type) {
        case nbd::kCmdWrite:
            op.kind = WriteOp::Kind::write;
            op.data = payload.span();
            op.data_in_own_pages = true;  // a pool buffer
            break;
        case nbd::kCmdWriteZeroes:
            op.kind = WriteOp::Kind::write_zeroes;
            op.may_trim = (request.flags & nbd::kCmdFlagNoHole) == 0;
            op.fast_only = (request.flags & nbd::kCmdFlagFastZero) != 0;
            break;
        case nbd::kCmdFlush:
            op.kind = WriteOp::Kind::flush;
            break;
        default:
            op.kind = WriteOp::Kind::trim;
            break;
    }
    return op;
}

}  // namespace

void Connection::start_write(std::shared_ptr<Connection> self, const nbd::Request& request,
                             Buffer payload, std::optional<IntervalLock::Ticket> ticket) {
    std::size_t slot = 0;
    if (free_write_slots_.empty()) {
        slot = write_slots_.size();
        write_slots_.emplace_back();
    } else {
        slot = free_write_slots_.back();
        free_write_slots_.pop_back();
    }
    WriteSlot& w = write_slots_[slot];
    w.request = request;
    w.payload = std::move(payload);
    w.self = std::move(self);
    // The operation may complete inside this call (a lone primary's inline write or flush, a
    // flush after a failed fdatasync, a write refused at once), which finish_write allows. The
    // callback (this + slot) fits std::function without an allocation.
    try {
        auto done = [this, slot](vmha::Status s) { finish_write(slot, std::move(s)); };
        const WriteOp op = write_op_of(w.request, w.payload);
        if (ticket) {
            export_->apply_in_order(*ticket, op, std::move(done));
        } else {
            export_->apply(op, std::move(done));
        }
    } catch (const std::exception& e) {  // e.g. std::bad_alloc: fail the request only
        // Answered already (it failed after completing inside the call): no second answer; the
        // connection closes (run() catches it).
        if (!write_slots_[slot].self) throw;
        // An operation that started cannot throw here (Export::apply is noexcept): this one did
        // not start, so its place in line goes back, or the writes that overlap it would wait
        // forever.
        if (ticket) export_->locks().release(*ticket);
        finish_write(slot, vmha::Error(vmha::errc::io_error,
                                       fmt::format("{} at offset {} failed: {}",
                                                   nbd::command_name(request.type),
                                                   request.offset, e.what())));
    }
}

void Connection::finish_write(std::size_t slot, vmha::Status status) {
    WriteSlot& w = write_slots_[slot];
    if (status) {
        reply_ok(w.request);
    } else {
        reply_error(w.request, status.error());
    }
    pool_.give(std::move(w.payload));
    w.payload = Buffer();
    --in_flight_;
    bytes_in_flight_ -= payload_bytes(w.request);
    free_write_slots_.push_back(slot);
    reader_wake_.notify();
    // Last: this may be the final reference to the connection.
    std::shared_ptr<Connection> keep = std::move(w.self);
}

vmha::Status Connection::serve_block_status(const nbd::Request& request) {
    const bool req_one = (request.flags & nbd::kCmdFlagReqOne) != 0;
    auto map = export_->file().allocation(request.offset, request.length, req_one ? 1 : 1024);
    if (!map) return std::move(map).error();
    std::vector<nbd::Extent> extents;
    extents.reserve(map->size());
    for (const ImageFile::Extent& e : *map) {
        extents.push_back({static_cast<std::uint32_t>(e.length),
                           e.hole ? (nbd::kStateHole | nbd::kStateZero) : 0U});
    }
    queue({nbd::encode_block_status_chunk(request.cookie, nbd::kBaseAllocationContextId, extents),
           {}});
    return {};
}

}  // namespace imagesync
