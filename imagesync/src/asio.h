// The Boost.Asio pieces imagesync uses, in one place.
//
// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>; GCC 12 then
// fails, so <utility> comes first here and every file includes Asio through this header.
#pragma once

#include <utility>

// Boost 1.74 enables C++20 coroutines for GCC but, with libstdc++, not for clang (the fuzzing
// compiler), although clang 14 supports them: turn them on where <coroutine> exists.
#if defined(__clang__) && !defined(BOOST_ASIO_HAS_CO_AWAIT) && __has_include(<coroutine>)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace imagesync {
namespace asio = boost::asio;
}  // namespace imagesync
