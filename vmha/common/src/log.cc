#include <unistd.h>

#include <memory>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <vmha/log.h>

namespace vmha {

std::optional<spdlog::level::level_enum> parse_log_level(std::string_view text) {
    using spdlog::level::level_enum;
    if (text == "error") return level_enum::err;
    if (text == "warn" || text == "warning") return level_enum::warn;
    if (text == "info") return level_enum::info;
    if (text == "debug") return level_enum::debug;
    if (text == "trace") return level_enum::trace;
    if (text == "off") return level_enum::off;
    return std::nullopt;
}

void init_logging(std::string_view program, spdlog::level::level_enum level) {
    std::shared_ptr<spdlog::logger> logger;
    const std::string name(program);
    if (isatty(STDERR_FILENO) != 0) {
        logger = spdlog::stderr_color_mt(name);
        logger->set_pattern("%H:%M:%S.%e %^%-5l%$ %v");
    } else {
        logger = spdlog::stderr_logger_mt(name);
        logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %n[%P] %l: %v");
    }
    logger->set_level(level);
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
}

}  // namespace vmha
