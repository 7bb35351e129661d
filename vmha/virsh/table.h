// virsh's table printer (libvirt tools/vsh-table.c), byte for byte: every cell is made safe
// (control characters, a literal "\x" and bytes that are not printable in the current locale
// become "\xNN"), column widths are display widths in the current locale (wcwidth), cells are
// separated by at least three spaces, and the header is underlined with dashes.
//
//    Id   Name   State          <- " " + cell, padded to the column's width + 2
//   ----------------------      <- width + 3 dashes per column
//    1    web1   running        <- the last cell is not padded
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace vmha::virsh {

class Table {
  public:
    explicit Table(std::vector<std::string> header);

    // A row has exactly as many cells as the header (a bug otherwise: internal_error()).
    void add_row(std::vector<std::string> cells);

    // The whole table; without the header (virsh -q), widths come from the rows alone.
    std::string render(bool with_header) const;

  private:
    std::vector<std::vector<std::string>> rows_;  // rows_[0] is the header
};

// vshTableSafeEncode(): the printable form of `text` and its display width.
std::string safe_encode(std::string_view text, std::size_t& width);

}  // namespace vmha::virsh
