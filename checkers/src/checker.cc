#include <checkers/checker.h>

namespace vmha::checkers {

std::string_view to_string(Verdict verdict) {
    switch (verdict) {
        case Verdict::healthy:
            return "healthy";
        case Verdict::failed:
            return "failed";
        case Verdict::unknown:
            return "unknown";
    }
    return "unknown";
}

std::string_view to_string(Cause cause) {
    switch (cause) {
        case Cause::none:
            return "none";
        case Cause::stopped:
            return "stopped";
        case Cause::paused:
            return "paused";
        case Cause::paused_on_io_error:
            return "paused_on_io_error";
        case Cause::hung:
            return "hung";
    }
    return "none";
}

}  // namespace vmha::checkers
