// vmha's one error vocabulary.
//
// Every component reports failures as a vmha::errc (its own std::error_category, never
// sharing a number space with errno) plus a whole sentence that quotes the values involved:
//   module "web1": disk "/var/lib/vm/web1.img" is 8 GiB here but 4 GiB on hv2
// Result<T> carries either a value or such an Error. Translation to foreign vocabularies
// (errno, NBD wire errors, libvirt errors, HTTP status) happens in exactly one function each,
// next to the code that speaks that vocabulary.
//
// Bugs are not failures: a broken invariant goes through internal_error(), which logs and
// aborts.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace vmha {

enum class errc {
    invalid_argument = 1,  // a caller, a CLI argument or a request asked for something malformed
    invalid_config,        // a configuration file is wrong; findings say where and why
    unreadable,            // a file or socket could not be read at all
    not_found,             // the named module, export, domain or file does not exist
    already_exists,        // the thing to create is there already
    io_error,              // the local disk or file system failed
    no_space,              // out of space on the local disk (or beyond an export's end)
    read_only,             // a write was refused: this side is not primary / export read-only
    permission_denied,     // the operating system refused access
    timeout,               // a deadline passed before the other side answered
    connection_lost,       // a peer, client or hypervisor connection broke
    protocol_error,        // a peer or client sent bytes that break the protocol
    version_mismatch,      // the other side speaks an incompatible protocol version
    peer_mismatch,         // the peer is not the one configured (identity, config, data)
    not_up_to_date,        // the data here is not UpToDate; starting the VM would lose writes
    split_brain,           // both sides wrote without each other; an operator must choose
    unsupported,           // the request is valid but this build or backend cannot do it
    busy,                  // another operation holds the resource; try again later
    shutting_down,         // the process is stopping and takes no new work
    hypervisor_error,      // libvirt or Hyper-V reported a failure
    internal,              // a bug; see internal_error()
};

}  // namespace vmha

template <>
struct std::is_error_code_enum<vmha::errc> : std::true_type {};

namespace vmha {

const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

// Stable lower-case name of a code, e.g. "not_up_to_date": used in --json output and logs.
std::string_view errc_name(errc e) noexcept;

// The one translation from errno values (as returned by system calls and io_uring CQEs).
errc errc_from_errno(int errno_value) noexcept;

// A failure: a code for programs, a whole sentence for people.
struct Error {
    std::error_code code;
    std::string message;

    Error(errc e, std::string msg) : code(make_error_code(e)), message(std::move(msg)) {}
    Error(std::error_code c, std::string msg) : code(c), message(std::move(msg)) {}

    bool is(errc e) const noexcept { return code == make_error_code(e); }
};

// Either a T or an Error (std::expected arrives with C++23; this is its small subset).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
    Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }

private:
    std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT

    bool ok() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return ok(); }
    const Error& error() const& { return error_; }
    Error&& error() && { return std::move(error_); }

private:
    Error error_{errc::internal, {}};
    bool failed_ = false;
};

using Status = Result<void>;

// A broken invariant: logs the message with where it happened, then aborts.
// (The __builtin_* defaults stand in for std::source_location, which clang 14 cannot build
// against libstdc++ 12; clang is the fuzzing compiler.)
[[noreturn]] void internal_error(std::string_view what, const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE(),
                                 const char* function = __builtin_FUNCTION());

}  // namespace vmha
