// Internal: a walker over yaml-cpp nodes that turns every mistake into a located Finding.
//
// A MapView looks at one YAML mapping, reports unknown keys (with "did you mean") and
// duplicate keys once when it is made, and offers typed getters that report wrong types and
// invalid values and return nullopt; callers keep their defaults and go on, so one pass finds
// every mistake.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include <vmha/config/load.h>

namespace vmha::config::detail {

// Letters, digits, '-', '_' and '.', 1 to 64 of them, starting with a letter or digit.
bool valid_name(std::string_view s);

// Closest candidate within a small edit distance, for "did you mean" hints; empty if none.
std::string closest(std::string_view word, std::span<const std::string_view> candidates);

class Reader {
public:
    Reader(std::string file, Findings& findings) : file_(std::move(file)), findings_(findings) {}

    SourceLocation at(const YAML::Node& node) const;
    SourceLocation at(const YAML::Mark& mark) const;
    void error(const YAML::Node& where, const std::string& key, std::string message);
    void warning(const YAML::Node& where, const std::string& key, std::string message);
    void error(SourceLocation where, const std::string& key, std::string message);
    const std::string& file() const { return file_; }
    Findings& findings() { return findings_; }
    std::size_t error_count() const { return errors_; }

private:
    std::string file_;
    Findings& findings_;
    std::size_t errors_ = 0;
};

// What a YAML node is, in words: "a mapping", "a list", "the text \"abc\"", "nothing".
std::string describe(const YAML::Node& node);

template <typename E>
struct Choice {
    std::string_view name;
    E value;
};

class MapView {
public:
    // `what` names the mapping in messages ("the module file", "a checker").
    MapView(Reader& reader, const YAML::Node& node, std::string path,
            std::vector<std::string_view> allowed, std::string_view what);

    bool valid() const { return valid_; }
    const YAML::Node& node() const { return node_; }
    std::string path_of(std::string_view key) const;

    // The value of `key`, or nullptr. With `required`, a missing key is reported.
    const YAML::Node* get(std::string_view key, bool required = false);
    SourceLocation location_of(std::string_view key) const;  // of the value (else the map)

    std::optional<std::string> string(std::string_view key, bool required = false);
    std::optional<long long> integer(std::string_view key, long long min, long long max,
                                     bool required = false);
    std::optional<bool> boolean(std::string_view key);
    std::optional<std::uint16_t> port(std::string_view key, bool required = false);
    // An absolute file system path.
    std::optional<std::string> path(std::string_view key, bool required = false);
    // A name made of letters, digits, '-', '_' and '.', starting with a letter or digit.
    std::optional<std::string> name(std::string_view key, bool required = false);

    // A scalar run through a parser returning Result<T>.
    // `expected` names the kind of value in the wrong-type message ("a duration").
    template <typename T, typename Parse>
    std::optional<T> parsed(std::string_view key, Parse parse, bool required = false,
                            std::string_view expected = "a single value");

    template <typename E>
    std::optional<E> choice(std::string_view key, std::span<const Choice<E>> choices,
                            bool required = false);

    // The list under `key` (reported if it is not a list).
    std::optional<YAML::Node> list(std::string_view key, bool required = false);
    // The mapping under `key` (only checks the type; make a MapView of it to read it).
    std::optional<YAML::Node> mapping(std::string_view key, bool required = false);

    Reader& reader() { return reader_; }

private:
    const YAML::Node* scalar(std::string_view key, bool required, std::string_view expected);
    YAML::Mark key_mark(std::string_view key) const;

    Reader& reader_;
    YAML::Node node_;
    std::string path_;
    bool valid_ = false;
    std::vector<std::pair<std::string, std::pair<YAML::Node, YAML::Node>>> entries_;
};

template <typename T, typename Parse>
std::optional<T> MapView::parsed(std::string_view key, Parse parse, bool required,
                                 std::string_view expected) {
    const YAML::Node* v = scalar(key, required, expected);
    if (v == nullptr) return std::nullopt;
    auto result = parse(v->Scalar());
    if (!result) {
        reader_.error(*v, path_of(key), result.error().message);
        return std::nullopt;
    }
    return T(std::move(*result));
}

std::string choice_names(std::span<const std::string_view> names);

template <typename E>
std::optional<E> MapView::choice(std::string_view key, std::span<const Choice<E>> choices,
                                 bool required) {
    const YAML::Node* v = scalar(key, required, "one of the listed words");
    if (v == nullptr) return std::nullopt;
    const std::string& text = v->Scalar();
    std::vector<std::string_view> names;
    for (const auto& c : choices) {
        if (c.name == text) return c.value;
        names.push_back(c.name);
    }
    std::string message = "\"" + text + "\" is not one of " + choice_names(names);
    if (auto hint = closest(text, names); !hint.empty()) {
        message += "; did you mean \"" + hint + "\"?";
    }
    reader_.error(*v, path_of(key), std::move(message));
    return std::nullopt;
}

}  // namespace vmha::config::detail
