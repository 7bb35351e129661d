// The progress display of `vmha resync|verify --watch`, byte for byte: the bar redrawn in place
// on a terminal, plain lines at most every 2 s otherwise, JSON lines with --json.
#include <sstream>

#include <gtest/gtest.h>

#include "../../vmha/cli/progress.h"

using vmha::cli::Progress;

TEST(Progress, TerminalBarIsRedrawnInPlaceAndEndedOnce) {
    std::ostringstream out;
    Progress bar("resync web1", false, out, true);
    bar.show(0, 4u << 20, "", {});
    bar.show(3u << 20, 4u << 20, "ETA 0:01", {});
    bar.show(5u << 20, 4u << 20, "", {});  // more than the total: shown as 100 %
    bar.finish();
    bar.finish();  // a second finish adds nothing
    EXPECT_EQ(out.str(),
              "\r[..............................] resync web1   0.0% 0 B of 4.0 MiB\033[K"
              "\r[######################........] resync web1  75.0% 3.0 MiB of 4.0 MiB, ETA 0:01\033[K"
              "\r[##############################] resync web1 100.0% 4.0 MiB of 4.0 MiB\033[K"
              "\n");
}

TEST(Progress, PipedOutputIsPlainLinesNoEscapes) {
    std::ostringstream out;
    Progress bar("verify web1", false, out, false);
    bar.show(1u << 20, 4u << 20, "comparing", {});
    bar.show(2u << 20, 4u << 20, "comparing", {});  // within 2 s of the last line: not printed
    bar.finish();
    EXPECT_EQ(out.str(), "verify web1  25.0% 1.0 MiB of 4.0 MiB, comparing\n");
}

TEST(Progress, JsonIsOneSampleALine) {
    std::ostringstream out;
    Progress bar("verify web1", true, out, true);  // --json wins over the terminal
    bar.show(1, 2, "", {{"module", "web1"}});
    bar.show(2, 2, "", {{"module", "web1"}});
    bar.finish();
    EXPECT_EQ(out.str(), "{\"event\":\"progress\",\"module\":\"web1\"}\n{\"event\":\"progress\",\"module\":\"web1\"}\n");
}
