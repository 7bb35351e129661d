// The table printer of virsh 9.0 (tools/vsh-table.c), reproduced for identical output.
#include "table.h"

#include <cwchar>
#include <cwctype>

#include <fmt/format.h>

#include <vmha/error.h>

namespace vmha::virsh {
namespace {

// g_snprintf(buf, 5, "\\x%02x", c) with a (signed) char: bytes >= 0x80 print as
// "\xffffff80" cut to four characters, i.e. "\xff". virsh does exactly this.
void append_hex(std::string& out, char c) {
    out += fmt::format("\\x{:02x}", static_cast<unsigned>(static_cast<int>(c))).substr(0, 4);
}

bool ascii_cntrl(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
}

bool ascii_print(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7f;
}

}  // namespace

std::string safe_encode(std::string_view text, std::size_t& width) {
    std::string out;
    width = 0;
    std::mbstate_t state{};
    std::size_t i = 0;
    while (i < text.size() && text[i] != '\0') {
        const char* p = text.data() + i;
        if ((p[0] == '\\' && i + 1 < text.size() && p[1] == 'x') || ascii_cntrl(p[0])) {
            append_hex(out, p[0]);
            width += 4;
            ++i;
            continue;
        }
        wchar_t wc = 0;
        std::size_t len =
            std::mbrtowc(&wc, p, MB_CUR_MAX, &state);  // NOLINT(concurrency-mt-unsafe)
        if (len == 0) break;
        if (len == static_cast<std::size_t>(-1) || len == static_cast<std::size_t>(-2)) {
            len = 1;
            if (!ascii_print(p[0])) {
                append_hex(out, p[0]);
                width += 4;
            } else {
                out += p[0];
                ++width;
            }
        } else if (!std::iswprint(static_cast<wint_t>(wc))) {
            for (std::size_t k = 0; k < len; ++k) {
                append_hex(out, p[k]);
                width += 4;
            }
        } else {
            out.append(p, len);
            width += static_cast<std::size_t>(::wcwidth(wc));  // as virsh: size_t arithmetic
        }
        i += len;
    }
    return out;
}

Table::Table(std::vector<std::string> header) {
    rows_.push_back(std::move(header));
}

void Table::add_row(std::vector<std::string> cells) {
    if (cells.size() != rows_[0].size()) {
        internal_error(fmt::format("table row with {} cells under a header of {}", cells.size(),
                                   rows_[0].size()));
    }
    rows_.push_back(std::move(cells));
}

std::string Table::render(bool with_header) const {
    const std::size_t columns = rows_[0].size();
    std::vector<std::vector<std::string>> cells(rows_.size());
    std::vector<std::vector<std::size_t>> widths(rows_.size(),
                                                 std::vector<std::size_t>(columns, 0));
    std::vector<std::size_t> max_widths(columns, 0);
    for (std::size_t r = 0; r < rows_.size(); ++r) {
        cells[r] = rows_[r];
        if (r == 0 && !with_header) continue;
        for (std::size_t c = 0; c < columns; ++c) {
            cells[r][c] = safe_encode(rows_[r][c], widths[r][c]);
            if (widths[r][c] > max_widths[c]) max_widths[c] = widths[r][c];
        }
    }
    std::string out;
    auto print_row = [&](std::size_t r) {
        for (std::size_t c = 0; c < columns; ++c) {
            out += ' ';
            out += cells[r][c];
            if (c + 1 < columns) out.append(max_widths[c] - widths[r][c] + 2, ' ');
        }
        out += '\n';
    };
    if (with_header) {
        print_row(0);
        for (std::size_t c = 0; c < columns; ++c) out.append(max_widths[c] + 3, '-');
        out += '\n';
    }
    for (std::size_t r = 1; r < rows_.size(); ++r) print_row(r);
    return out;
}

}  // namespace vmha::virsh
