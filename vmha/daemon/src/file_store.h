// module::Store in a JSON file (<state_dir>/<module>/module.json), replaced atomically: written
// to a temporary file, fsynced, renamed over the old one, and the directory fsynced. A missing
// file is a module never started; an unreadable or corrupt one is reported and read as such.
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include <vmha/module/ports.h>

namespace vmha::daemon {

class FileStore final : public module::Store {
public:
    explicit FileStore(std::filesystem::path path) : path_(std::move(path)) {}
    module::Persisted load() override;
    Status save(const module::Persisted& state) override;
    const std::filesystem::path& path() const { return path_; }

private:
    static void read(const nlohmann::json& j, module::Persisted& p);
    std::filesystem::path path_;
};

}  // namespace vmha::daemon
