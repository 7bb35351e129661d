#include <algorithm>
#include <charconv>
#include <set>

#include <fmt/format.h>

#include "reader.h"

namespace vmha::config::detail {

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1);
    std::vector<std::size_t> cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

}  // namespace

bool valid_name(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    if (std::isalnum(static_cast<unsigned char>(s.front())) == 0) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
    });
}

std::string closest(std::string_view word, std::span<const std::string_view> candidates) {
    std::string best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto c : candidates) {
        // A word that is the start of a key ("state" for "state_dir") is close enough.
        const bool prefix = word.size() >= 3 && c.size() > word.size() && c.substr(0, word.size()) == word;
        const std::size_t d = prefix ? 1 : edit_distance(word, c);
        if (d < best_distance) {
            best_distance = d;
            best = std::string(c);
        }
    }
    return best;
}

std::string choice_names(std::span<const std::string_view> names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) out += (i + 1 == names.size()) ? " or " : ", ";
        out += names[i];
    }
    return out;
}

SourceLocation Reader::at(const YAML::Mark& mark) const {
    if (mark.is_null()) return SourceLocation{file_, 0, 0};
    return SourceLocation{file_, mark.line + 1, mark.column + 1};
}

SourceLocation Reader::at(const YAML::Node& node) const { return at(node.Mark()); }

void Reader::error(const YAML::Node& where, const std::string& key, std::string message) {
    error(at(where), key, std::move(message));
}

void Reader::error(SourceLocation where, const std::string& key, std::string message) {
    ++errors_;
    findings_.error(std::move(where), key, std::move(message));
}

void Reader::warning(const YAML::Node& where, const std::string& key, std::string message) {
    findings_.warning(at(where), key, std::move(message));
}

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Map: return "a mapping";
        case YAML::NodeType::Sequence: return "a list";
        case YAML::NodeType::Scalar: return fmt::format("\"{}\"", node.Scalar());
        case YAML::NodeType::Null:
        case YAML::NodeType::Undefined: return "nothing";
    }
    return "nothing";
}

MapView::MapView(Reader& reader, const YAML::Node& node, std::string path,
                 std::vector<std::string_view> allowed, std::string_view what)
    : reader_(reader), node_(node), path_(std::move(path)) {
    if (!node.IsMap()) {
        reader_.error(node, path_.empty() ? std::string(what) : path_,
                      fmt::format("{} must be a mapping of keys to values, found {}", what,
                                  describe(node)));
        return;
    }
    valid_ = true;
    const std::vector<std::string_view>& keys = allowed;
    std::set<std::string> seen;
    // yaml-cpp's iterators hand out temporaries: copy the (reference-counted) nodes.
    for (const auto& kv : node) {
        const YAML::Node k = kv.first;
        const YAML::Node v = kv.second;
        if (!k.IsScalar()) {
            reader_.error(k, path_, fmt::format("a key must be a word, found {}", describe(k)));
            continue;
        }
        const std::string& name = k.Scalar();
        if (std::find(keys.begin(), keys.end(), name) == keys.end()) {
            std::string message = fmt::format("unknown key \"{}\" in {}", name, what);
            if (auto hint = closest(name, keys); !hint.empty()) {
                message += fmt::format("; did you mean \"{}\"?", hint);
            }
            reader_.error(k, path_of(name), std::move(message));
            continue;
        }
        if (!seen.insert(name).second) {
            reader_.error(k, path_of(name),
                          fmt::format("key \"{}\" appears twice in {}", name, what));
            continue;
        }
        entries_.push_back({name, {k, v}});
    }
}

std::string MapView::path_of(std::string_view key) const {
    if (path_.empty()) return std::string(key);
    return fmt::format("{}.{}", path_, key);
}

const YAML::Node* MapView::get(std::string_view key, bool required) {
    for (const auto& [name, kv] : entries_) {
        if (name == key) return &kv.second;
    }
    if (required && valid_) {
        reader_.error(node_, path_of(key), fmt::format("required key \"{}\" is missing", key));
    }
    return nullptr;
}

SourceLocation MapView::location_of(std::string_view key) const {
    for (const auto& [name, kv] : entries_) {
        if (name == key) return reader_.at(kv.second.IsNull() ? kv.first : kv.second);
    }
    return reader_.at(node_);
}

const YAML::Node* MapView::scalar(std::string_view key, bool required, std::string_view expected) {
    const YAML::Node* v = get(key, required);
    if (v == nullptr) return nullptr;
    if (!v->IsScalar()) {
        // A key with no value points at the key itself.
        reader_.error(v->IsNull() ? reader_.at(key_mark(key)) : reader_.at(*v), path_of(key),
                      fmt::format("expected {}, found {}", expected, describe(*v)));
        return nullptr;
    }
    return v;
}

YAML::Mark MapView::key_mark(std::string_view key) const {
    for (const auto& [name, kv] : entries_) {
        if (name == key) return kv.first.Mark();
    }
    return node_.Mark();
}

std::optional<std::string> MapView::string(std::string_view key, bool required) {
    const YAML::Node* v = scalar(key, required, "text");
    if (v == nullptr) return std::nullopt;
    if (v->Scalar().empty()) {
        reader_.error(*v, path_of(key), "must not be empty");
        return std::nullopt;
    }
    return v->Scalar();
}

std::optional<long long> MapView::integer(std::string_view key, long long min, long long max,
                                          bool required) {
    const YAML::Node* v = scalar(key, required, "a whole number");
    if (v == nullptr) return std::nullopt;
    const std::string& s = v->Scalar();
    long long value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
        reader_.error(*v, path_of(key), fmt::format("expected a whole number, found \"{}\"", s));
        return std::nullopt;
    }
    if (value < min || value > max) {
        reader_.error(*v, path_of(key),
                      fmt::format("{} is out of range; it must be {} to {}", value, min, max));
        return std::nullopt;
    }
    return value;
}

std::optional<std::uint16_t> MapView::port(std::string_view key, bool required) {
    const YAML::Node* v = scalar(key, required, "a port number");
    if (v == nullptr) return std::nullopt;
    const std::string& s = v->Scalar();
    long long value = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
        reader_.error(*v, path_of(key), fmt::format("expected a port number, found \"{}\"", s));
        return std::nullopt;
    }
    auto p = check_port(value);
    if (!p) {
        reader_.error(*v, path_of(key), p.error().message);
        return std::nullopt;
    }
    return *p;
}

std::optional<bool> MapView::boolean(std::string_view key) {
    const YAML::Node* v = scalar(key, false, "true or false");
    if (v == nullptr) return std::nullopt;
    const std::string& s = v->Scalar();
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    reader_.error(*v, path_of(key), fmt::format("expected true or false, found \"{}\"", s));
    return std::nullopt;
}

std::optional<std::string> MapView::path(std::string_view key, bool required) {
    const YAML::Node* v = scalar(key, required, "a file path");
    if (v == nullptr) return std::nullopt;
    const std::string& s = v->Scalar();
    if (s.empty() || s.front() != '/') {
        reader_.error(*v, path_of(key),
                      fmt::format("path \"{}\" must be absolute (start with \"/\")", s));
        return std::nullopt;
    }
    return s;
}

std::optional<std::string> MapView::name(std::string_view key, bool required) {
    const YAML::Node* v = scalar(key, required, "a name");
    if (v == nullptr) return std::nullopt;
    const std::string& s = v->Scalar();
    if (!valid_name(s)) {
        reader_.error(*v, path_of(key),
                      fmt::format("name \"{}\" must be 1 to 64 letters, digits, '-', '_' or '.', "
                                  "starting with a letter or digit",
                                  s));
        return std::nullopt;
    }
    return s;
}

std::optional<YAML::Node> MapView::list(std::string_view key, bool required) {
    const YAML::Node* v = get(key, required);
    if (v == nullptr) return std::nullopt;
    if (!v->IsSequence()) {
        reader_.error(v->IsNull() ? reader_.at(key_mark(key)) : reader_.at(*v), path_of(key),
                      fmt::format("expected a list, found {}", describe(*v)));
        return std::nullopt;
    }
    return *v;
}

std::optional<YAML::Node> MapView::mapping(std::string_view key, bool required) {
    const YAML::Node* v = get(key, required);
    if (v == nullptr) return std::nullopt;
    if (!v->IsMap()) {
        reader_.error(v->IsNull() ? reader_.at(key_mark(key)) : reader_.at(*v), path_of(key),
                      fmt::format("expected a mapping, found {}", describe(*v)));
        return std::nullopt;
    }
    return *v;
}

}  // namespace vmha::config::detail
