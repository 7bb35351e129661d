// module::Store in a JSON file (<state_dir>/<module>/module.json), replaced atomically: written
// to a temporary file, fsynced, renamed over the old one, and the directory fsynced. A missing
// file is a module never started; an unreadable or corrupt one is reported and read as such.
#pragma once

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include <vmha/module/ports.h>
#include <vmha/module/scheduler.h>

namespace vmha::daemon {

// `j` written to `path` atomically and durably (temporary file, fsync, rename, fsync of the
// directory, which is created if missing).
Status write_json_file(const std::filesystem::path& path, const nlohmann::json& j);
// nullopt if there is no such file; an error if it is there but unreadable or not JSON.
Result<std::optional<nlohmann::json>> read_json_file(const std::filesystem::path& path);

// The module's schedule (<state_dir>/<module>/schedule.json).
class ScheduleFile final : public module::ScheduleStore {
public:
    explicit ScheduleFile(std::filesystem::path path) : path_(std::move(path)) {}
    Result<std::optional<nlohmann::json>> load() override { return read_json_file(path_); }
    Status save(const nlohmann::json& plan) override { return write_json_file(path_, plan); }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

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
