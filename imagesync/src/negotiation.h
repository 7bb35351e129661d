// NBD option negotiation (fixed newstyle) as a pure state machine, without I/O.
//
// The connection reads the client flags and then one option at a time (16-byte header, data)
// and hands them here; each call returns the bytes to send back and what to do next. Keeping
// this free of sockets lets the unit tests and the fuzz target drive every path.
//
// State narrative: start -> (client flags accepted) -> options, where every option is
// answered and negotiation continues, until NBD_OPT_GO or NBD_OPT_EXPORT_NAME succeeds
// (-> transmission), NBD_OPT_ABORT arrives or a framing error happens (-> close).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <vmha/error.h>

#include "nbd_codec.h"
#include "nbd_protocol.h"

namespace imagesync::nbd {

// What negotiation needs to know about one export.
struct ExportInfo {
    std::string name;
    std::uint64_t size = 0;
    bool read_only = false;

    // The advertised minimum block size: 512, or 1 when the size is not a multiple of 512.
    std::uint32_t min_block() const { return size % 512 == 0 ? 512U : 1U; }
};

// The outcome of a successful negotiation.
struct Negotiated {
    std::size_t export_index = 0;
    bool structured_replies = false;
    bool base_allocation = false;
    std::uint16_t transmission_flags = 0;
};

class Negotiator {
  public:
    enum class Next { read_option, close, transmission };
    struct Step {
        Bytes reply;
        Next next = Next::read_option;
        std::string reason;  // why the connection closes or what was refused, for the log
    };

    // At most this many options per connection; a client looping forever is disconnected.
    static constexpr std::size_t kMaxOptions = 4096;

    explicit Negotiator(std::vector<ExportInfo> exports);

    // The 4 client flag bytes that follow the greeting.
    vmha::Status accept_client_flags(ByteView flags);

    // One option; `data` is exactly the option's data (length already bounded by the caller
    // to kMaxOptionLength).
    Step handle_option(std::uint32_t option, ByteView data);

    // Valid after a Step with Next::transmission.
    const Negotiated& negotiated() const { return negotiated_; }

    // The transmission flags advertised for an export.
    static std::uint16_t transmission_flags(const ExportInfo& e, bool structured_replies);

    // Resolves an export name: exact match, or "" when exactly one export is served.
    std::optional<std::size_t> find_export(std::string_view name) const;

  private:
    Step handle_info_or_go(std::uint32_t option, ByteView data);
    Step handle_meta_context(std::uint32_t option, ByteView data);
    Step handle_export_name(ByteView data);

    std::vector<ExportInfo> exports_;
    bool no_zeroes_ = false;
    bool structured_replies_ = false;
    std::size_t options_seen_ = 0;
    // SET_META_CONTEXT result: valid for GO only on the same export.
    std::optional<std::size_t> meta_context_export_;
    bool base_allocation_selected_ = false;
    Negotiated negotiated_;
};

}  // namespace imagesync::nbd
