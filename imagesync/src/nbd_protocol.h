// NBD wire constants (fixed newstyle only), from NetworkBlockDevice/nbd doc/proto.md.
//
// Only numbers live here; parsing and serialisation are in nbd_codec.h.
#pragma once

#include <cstdint>

namespace imagesync::nbd {

// Handshake.
inline constexpr std::uint64_t kNbdMagic = 0x4e42444d41474943ULL;     // "NBDMAGIC"
inline constexpr std::uint64_t kOptionMagic = 0x49484156454F5054ULL;  // "IHAVEOPT"
inline constexpr std::uint64_t kOptionReplyMagic = 0x0003e889045565a9ULL;

inline constexpr std::uint16_t kFlagFixedNewstyle = 1U << 0;
inline constexpr std::uint16_t kFlagNoZeroes = 1U << 1;
inline constexpr std::uint32_t kClientFlagFixedNewstyle = 1U << 0;
inline constexpr std::uint32_t kClientFlagNoZeroes = 1U << 1;

// Options.
inline constexpr std::uint32_t kOptExportName = 1;
inline constexpr std::uint32_t kOptAbort = 2;
inline constexpr std::uint32_t kOptList = 3;
inline constexpr std::uint32_t kOptPeekExport = 4;
inline constexpr std::uint32_t kOptStartTls = 5;
inline constexpr std::uint32_t kOptInfo = 6;
inline constexpr std::uint32_t kOptGo = 7;
inline constexpr std::uint32_t kOptStructuredReply = 8;
inline constexpr std::uint32_t kOptListMetaContext = 9;
inline constexpr std::uint32_t kOptSetMetaContext = 10;
inline constexpr std::uint32_t kOptExtendedHeaders = 11;

// Option reply types.
inline constexpr std::uint32_t kRepAck = 1;
inline constexpr std::uint32_t kRepServer = 2;
inline constexpr std::uint32_t kRepInfo = 3;
inline constexpr std::uint32_t kRepMetaContext = 4;
inline constexpr std::uint32_t kRepErrBit = 1U << 31;
inline constexpr std::uint32_t kRepErrUnsup = kRepErrBit + 1;
inline constexpr std::uint32_t kRepErrPolicy = kRepErrBit + 2;
inline constexpr std::uint32_t kRepErrInvalid = kRepErrBit + 3;
inline constexpr std::uint32_t kRepErrPlatform = kRepErrBit + 4;
inline constexpr std::uint32_t kRepErrTlsReqd = kRepErrBit + 5;
inline constexpr std::uint32_t kRepErrUnknown = kRepErrBit + 6;
inline constexpr std::uint32_t kRepErrShutdown = kRepErrBit + 7;
inline constexpr std::uint32_t kRepErrBlockSizeReqd = kRepErrBit + 8;
inline constexpr std::uint32_t kRepErrTooBig = kRepErrBit + 9;

// NBD_INFO_* types inside NBD_REP_INFO.
inline constexpr std::uint16_t kInfoExport = 0;
inline constexpr std::uint16_t kInfoName = 1;
inline constexpr std::uint16_t kInfoDescription = 2;
inline constexpr std::uint16_t kInfoBlockSize = 3;

// Transmission flags.
inline constexpr std::uint16_t kFlagHasFlags = 1U << 0;
inline constexpr std::uint16_t kFlagReadOnly = 1U << 1;
inline constexpr std::uint16_t kFlagSendFlush = 1U << 2;
inline constexpr std::uint16_t kFlagSendFua = 1U << 3;
inline constexpr std::uint16_t kFlagRotational = 1U << 4;
inline constexpr std::uint16_t kFlagSendTrim = 1U << 5;
inline constexpr std::uint16_t kFlagSendWriteZeroes = 1U << 6;
inline constexpr std::uint16_t kFlagSendDf = 1U << 7;
inline constexpr std::uint16_t kFlagCanMultiConn = 1U << 8;
inline constexpr std::uint16_t kFlagSendResize = 1U << 9;
inline constexpr std::uint16_t kFlagSendCache = 1U << 10;
inline constexpr std::uint16_t kFlagSendFastZero = 1U << 11;

// Requests and replies.
inline constexpr std::uint32_t kRequestMagic = 0x25609513;
inline constexpr std::uint32_t kSimpleReplyMagic = 0x67446698;
inline constexpr std::uint32_t kStructuredReplyMagic = 0x668e33ef;
inline constexpr std::size_t kRequestHeaderSize = 28;
inline constexpr std::size_t kSimpleReplySize = 16;
inline constexpr std::size_t kStructuredHeaderSize = 20;
inline constexpr std::size_t kOptionHeaderSize = 16;
inline constexpr std::size_t kGreetingSize = 18;

inline constexpr std::uint16_t kCmdRead = 0;
inline constexpr std::uint16_t kCmdWrite = 1;
inline constexpr std::uint16_t kCmdDisc = 2;
inline constexpr std::uint16_t kCmdFlush = 3;
inline constexpr std::uint16_t kCmdTrim = 4;
inline constexpr std::uint16_t kCmdCache = 5;
inline constexpr std::uint16_t kCmdWriteZeroes = 6;
inline constexpr std::uint16_t kCmdBlockStatus = 7;

inline constexpr std::uint16_t kCmdFlagFua = 1U << 0;
inline constexpr std::uint16_t kCmdFlagNoHole = 1U << 1;
inline constexpr std::uint16_t kCmdFlagDf = 1U << 2;
inline constexpr std::uint16_t kCmdFlagReqOne = 1U << 3;
inline constexpr std::uint16_t kCmdFlagFastZero = 1U << 4;

inline constexpr std::uint16_t kReplyFlagDone = 1U << 0;
inline constexpr std::uint16_t kReplyTypeNone = 0;
inline constexpr std::uint16_t kReplyTypeOffsetData = 1;
inline constexpr std::uint16_t kReplyTypeOffsetHole = 2;
inline constexpr std::uint16_t kReplyTypeBlockStatus = 5;
inline constexpr std::uint16_t kReplyTypeError = (1U << 15) + 1;
inline constexpr std::uint16_t kReplyTypeErrorOffset = (1U << 15) + 2;

// Wire error values (never errno: see nbd_error_from()).
inline constexpr std::uint32_t kEperm = 1;
inline constexpr std::uint32_t kEio = 5;
inline constexpr std::uint32_t kEnomem = 12;
inline constexpr std::uint32_t kEinval = 22;
inline constexpr std::uint32_t kEnospc = 28;
inline constexpr std::uint32_t kEoverflow = 75;
inline constexpr std::uint32_t kEnotsup = 95;
inline constexpr std::uint32_t kEshutdown = 108;

// base:allocation.
inline constexpr std::uint32_t kStateHole = 1U << 0;
inline constexpr std::uint32_t kStateZero = 1U << 1;
inline constexpr std::uint32_t kBaseAllocationContextId = 1;
inline constexpr const char* kBaseAllocation = "base:allocation";

// Limits imagesync applies.
inline constexpr std::uint32_t kMinBlockSize = 512;
inline constexpr std::uint32_t kPreferredBlockSize = 4096;
inline constexpr std::uint32_t kMaxPayload = 32U * 1024 * 1024;  // 32 MiB, QEMU's own cap
inline constexpr std::uint32_t kMaxOptionLength = 64U * 1024;    // option data beyond: disconnect
inline constexpr std::uint32_t kMaxStringLength = 4096;          // proto.md "MUST be <= 4096"

}  // namespace imagesync::nbd
