#include "negotiation.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace imagesync::nbd {

namespace {

Negotiator::Step reply(Bytes bytes, std::string reason = {}) {
    return {std::move(bytes), Negotiator::Next::read_option, std::move(reason)};
}

Negotiator::Step error_reply(std::uint32_t option, std::uint32_t error, std::string message) {
    Bytes bytes = encode_option_error(option, error, message);
    return {std::move(bytes), Negotiator::Next::read_option, std::move(message)};
}

Negotiator::Step close_with(std::string reason, Bytes bytes = {}) {
    return {std::move(bytes), Negotiator::Next::close, std::move(reason)};
}

void append(Bytes& out, const Bytes& more) {
    out.insert(out.end(), more.begin(), more.end());
}

std::string option_name(std::uint32_t option) {
    switch (option) {
        case kOptExportName:
            return "EXPORT_NAME";
        case kOptAbort:
            return "ABORT";
        case kOptList:
            return "LIST";
        case kOptPeekExport:
            return "PEEK_EXPORT";
        case kOptStartTls:
            return "STARTTLS";
        case kOptInfo:
            return "INFO";
        case kOptGo:
            return "GO";
        case kOptStructuredReply:
            return "STRUCTURED_REPLY";
        case kOptListMetaContext:
            return "LIST_META_CONTEXT";
        case kOptSetMetaContext:
            return "SET_META_CONTEXT";
        case kOptExtendedHeaders:
            return "EXTENDED_HEADERS";
        default:
            return fmt::format("option {}", option);
    }
}

}  // namespace

Negotiator::Negotiator(std::vector<ExportInfo> exports) : exports_(std::move(exports)) {}

vmha::Status Negotiator::accept_client_flags(ByteView flags) {
    auto parsed = parse_client_flags(flags);
    if (!parsed) return std::move(parsed).error();
    no_zeroes_ = parsed->no_zeroes;
    return {};
}

std::uint16_t Negotiator::transmission_flags(const ExportInfo& e, bool structured_replies) {
    // FLUSH/FUA map to fdatasync/RWF_DSYNC on the one shared file descriptor, so a FLUSH
    // covers writes completed on every connection: multi-conn is honest.
    std::uint16_t flags = kFlagHasFlags | kFlagSendFlush | kFlagCanMultiConn | kFlagSendCache;
    if (structured_replies) flags |= kFlagSendDf;
    if (e.read_only) {
        flags |= kFlagReadOnly;
    } else {
        flags |= kFlagSendFua | kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
    }
    return flags;
}

std::optional<std::size_t> Negotiator::find_export(std::string_view name) const {
    for (std::size_t i = 0; i < exports_.size(); ++i) {
        if (exports_[i].name == name) return i;
    }
    if (name.empty() && exports_.size() == 1) return 0;
    return std::nullopt;
}

Negotiator::Step Negotiator::handle_option(std::uint32_t option, ByteView data) {
    if (++options_seen_ > kMaxOptions) {
        return close_with(fmt::format("the client sent more than {} options", kMaxOptions));
    }
    switch (option) {
        case kOptExportName:
            return handle_export_name(data);
        case kOptAbort:
            return close_with("the client aborted negotiation",
                              encode_option_reply(option, kRepAck));
        case kOptList: {
            if (!data.empty()) {
                return error_reply(option, kRepErrInvalid,
                                   fmt::format("LIST takes no data, got {} bytes", data.size()));
            }
            Bytes out;
            for (const ExportInfo& e : exports_) append(out, encode_rep_server(option, e.name));
            append(out, encode_option_reply(option, kRepAck));
            return reply(std::move(out));
        }
        case kOptStartTls:
            return error_reply(option, kRepErrPolicy, "TLS is not offered on this socket");
        case kOptStructuredReply:
            if (!data.empty()) {
                return error_reply(
                    option, kRepErrInvalid,
                    fmt::format("STRUCTURED_REPLY takes no data, got {} bytes", data.size()));
            }
            if (structured_replies_) {
                return error_reply(option, kRepErrInvalid,
                                   "structured replies were already negotiated");
            }
            structured_replies_ = true;
            return reply(encode_option_reply(option, kRepAck));
        case kOptInfo:
        case kOptGo:
            return handle_info_or_go(option, data);
        case kOptListMetaContext:
        case kOptSetMetaContext:
            return handle_meta_context(option, data);
        default:
            return error_reply(option, kRepErrUnsup,
                               fmt::format("{} is not supported", option_name(option)));
    }
}

Negotiator::Step Negotiator::handle_export_name(ByteView data) {
    if (data.size() > kMaxStringLength) {
        return close_with(fmt::format("EXPORT_NAME carries a {}-byte name, more than {}",
                                      data.size(), kMaxStringLength));
    }
    std::string name(data.size(), '\0');
    std::transform(data.begin(), data.end(), name.begin(),
                   [](std::byte b) { return static_cast<char>(b); });
    const auto index = find_export(name);
    if (!index) {
        // EXPORT_NAME cannot carry an error: the protocol says to disconnect.
        return close_with(
            fmt::format("EXPORT_NAME asked for export \"{}\", which is not served", name));
    }
    const ExportInfo& e = exports_[*index];
    negotiated_ = Negotiated{.export_index = *index,
                             .structured_replies = structured_replies_,
                             .base_allocation = structured_replies_ && base_allocation_selected_ &&
                                                meta_context_export_ == index,
                             .transmission_flags = transmission_flags(e, structured_replies_)};
    return {encode_export_name_reply(e.size, negotiated_.transmission_flags, no_zeroes_),
            Next::transmission,
            {}};
}

Negotiator::Step Negotiator::handle_info_or_go(std::uint32_t option, ByteView data) {
    auto request = parse_info_request(data);
    if (!request) {
        return error_reply(option, kRepErrInvalid,
                           fmt::format("{}: {}", option_name(option), request.error().message));
    }
    const auto index = find_export(request->export_name);
    if (!index) {
        return error_reply(option, kRepErrUnknown,
                           fmt::format("export \"{}\" is not served here", request->export_name));
    }
    const ExportInfo& e = exports_[*index];
    const std::uint16_t flags = transmission_flags(e, structured_replies_);
    Bytes out = encode_info_export(option, e.size, flags);
    // Block sizes are always sent (clients that did not ask may ignore them).
    append(out, encode_info_block_size(option, e.min_block(), kPreferredBlockSize, kMaxPayload));
    const auto& types = request->info_types;
    if (std::find(types.begin(), types.end(), kInfoName) != types.end()) {
        append(out, encode_info_name(option, e.name));
    }
    append(out, encode_option_reply(option, kRepAck));
    if (option == kOptInfo) return reply(std::move(out));

    negotiated_ = Negotiated{.export_index = *index,
                             .structured_replies = structured_replies_,
                             .base_allocation = structured_replies_ && base_allocation_selected_ &&
                                                meta_context_export_ == index,
                             .transmission_flags = flags};
    return {std::move(out), Next::transmission, {}};
}

Negotiator::Step Negotiator::handle_meta_context(std::uint32_t option, ByteView data) {
    const bool set = option == kOptSetMetaContext;
    if (set && !structured_replies_) {
        return error_reply(option, kRepErrInvalid,
                           "SET_META_CONTEXT needs structured replies to be negotiated first");
    }
    auto request = parse_meta_context_request(data);
    if (!request) {
        return error_reply(option, kRepErrInvalid,
                           fmt::format("{}: {}", option_name(option), request.error().message));
    }
    const auto index = find_export(request->export_name);
    if (!index) {
        return error_reply(option, kRepErrUnknown,
                           fmt::format("export \"{}\" is not served here", request->export_name));
    }
    bool match = false;
    if (request->queries.empty()) {
        match = !set;  // LIST with no query lists everything; SET with none selects nothing
    }
    for (const std::string& q : request->queries) {
        if (q == kBaseAllocation || (!set && q == "base:")) match = true;
    }
    Bytes out;
    if (match) append(out, encode_meta_context(option, kBaseAllocationContextId, kBaseAllocation));
    append(out, encode_option_reply(option, kRepAck));
    if (set) {
        meta_context_export_ = index;
        base_allocation_selected_ = match;
    }
    return reply(std::move(out));
}

}  // namespace imagesync::nbd
