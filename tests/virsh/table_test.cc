// Unit tests of vmha-virsh's pieces that need no hypervisor: virsh's table printer (expected
// outputs copied from virsh 9.0), its argument parsing (virsh's error sentences) and the
// refusals of commands that change something.
#include "table.h"

#include <clocale>

#include <gtest/gtest.h>

#include "args.h"
#include "commands.h"

namespace {

using namespace vmha::virsh;

// Sets LC_ALL for one test and restores "C" after.
class Locale {
  public:
    explicit Locale(const char* name) { ok_ = std::setlocale(LC_ALL, name) != nullptr; }
    ~Locale() { std::setlocale(LC_ALL, "C"); }
    bool ok() const { return ok_; }

  private:
    bool ok_ = false;
};

TEST(Table, VirshListLayout) {
    // virsh -c test:///default list --all
    Table t({"Id", "Name", "State"});
    t.add_row({"1", "test", "running"});
    EXPECT_EQ(t.render(true),
              " Id   Name   State\n"
              "----------------------\n"
              " 1    test   running\n");
}

TEST(Table, ColumnsWidenToTheirLongestCellAndTheLastIsNotPadded) {
    Table t({"Id", "Name", "State"});
    t.add_row({"1", "run1", "running"});
    t.add_row({"-", "titled", "shut off"});
    EXPECT_EQ(t.render(true),
              " Id   Name     State\n"
              "-------------------------\n"
              " 1    run1     running\n"
              " -    titled   shut off\n");
}

TEST(Table, QuietWidthsIgnoreTheHeader) {
    // virsh -q list --all: "Name" no longer counts, "State" neither.
    Table t({"Id", "Name", "State"});
    t.add_row({"1", "a", "running"});
    t.add_row({"-", "bb", "shut off"});
    EXPECT_EQ(t.render(false),
              " 1   a    running\n"
              " -   bb   shut off\n");
}

TEST(Table, EmptyLastCellStillPadsThePreviousOnes) {
    // virsh list --title with a domain without a title ends its row with spaces.
    Table t({"Id", "Name", "State", "Title"});
    t.add_row({"1", "test", "running", ""});
    EXPECT_EQ(t.render(true),
              " Id   Name   State     Title\n"
              "------------------------------\n"
              " 1    test   running   \n");
}

TEST(Table, HeaderOnly) {
    Table t({"Target", "Source"});
    EXPECT_EQ(t.render(true), " Target   Source\n------------------\n");
    EXPECT_EQ(t.render(false), "");
}

TEST(SafeEncode, ControlCharactersAndLiteralBackslashX) {
    std::size_t width = 0;
    EXPECT_EQ(safe_encode("a\tb", width), "a\\x09b");
    EXPECT_EQ(width, 6u);
    EXPECT_EQ(safe_encode("\\x41", width), "\\x5cx41");
    EXPECT_EQ(width, 7u);
    EXPECT_EQ(safe_encode("back\\slash", width), "back\\slash");
    EXPECT_EQ(width, 10u);
}

TEST(SafeEncode, Utf8CountsDisplayWidth) {
    Locale l("C.UTF-8");
    if (!l.ok()) GTEST_SKIP() << "no C.UTF-8 locale";
    std::size_t width = 0;
    EXPECT_EQ(safe_encode("A titled VM — ünïcode", width), "A titled VM — ünïcode");
    EXPECT_EQ(width, 21u);
    EXPECT_EQ(safe_encode("日本", width), "日本");  // wide characters: two columns each
    EXPECT_EQ(width, 4u);
}

TEST(SafeEncode, NonAsciiInTheCLocaleIsHexLikeVirsh) {
    Locale l("C");
    std::size_t width = 0;
    // virsh prints each such byte with "%02x" of a signed char cut to 4 bytes: "\xff".
    EXPECT_EQ(safe_encode("\xc3\xbc", width), "\\xff\\xff");
    EXPECT_EQ(width, 8u);
}

std::vector<std::string> argv_of(std::initializer_list<const char*> words) {
    std::vector<std::string> v{"vmha-virsh"};
    for (const char* w : words) v.emplace_back(w);
    return v;
}

std::string usage_error(std::initializer_list<const char*> words) {
    auto r = parse_global(argv_of(words));
    auto* e = std::get_if<UsageError>(&r);
    return e != nullptr ? e->message : "(parsed)";
}

TEST(GlobalOptions, VirshSpellings) {
    auto r = std::get<GlobalParse>(
        parse_global(argv_of({"-qr", "-cURI", "--config=/x.yaml", "list", "--all"})));
    EXPECT_TRUE(r.options.quiet);
    EXPECT_TRUE(r.options.readonly);
    EXPECT_EQ(r.options.connect, "URI");
    EXPECT_EQ(r.options.config, "/x.yaml");
    EXPECT_EQ(r.rest, (std::vector<std::string>{"list", "--all"}));

    r = std::get<GlobalParse>(
        parse_global(argv_of({"--connect", "U2", "--readonly", "-d", "5", "domstate", "x"})));
    EXPECT_EQ(r.options.connect, "U2");
    EXPECT_EQ(r.rest, (std::vector<std::string>{"domstate", "x"}));
    EXPECT_EQ(std::get<GlobalParse>(parse_global(argv_of({}))).rest.size(), 0u);
}

TEST(GlobalOptions, VirshErrors) {
    EXPECT_EQ(usage_error({"--foo", "list"}), "unsupported option '--foo'. See --help.");
    EXPECT_EQ(usage_error({"-x", "list"}), "unsupported option '-x'. See --help.");
    EXPECT_EQ(usage_error({"-c"}), "option '-c'/'--connect' requires an argument");
    EXPECT_EQ(usage_error({"--connect"}), "option '-c'/'--connect' requires an argument");
}

std::string command_error(const char* name, std::initializer_list<const char*> words) {
    std::vector<std::string> v(words.begin(), words.end());
    auto r = parse_command(*find_command(name), v);
    auto* e = std::get_if<UsageError>(&r);
    return e != nullptr ? e->message : "(parsed)";
}

TEST(CommandOptions, OptionsAnywhereAndTheDomainPositional) {
    for (auto words : {std::vector<std::string>{"--reason", "web1"},
                       {"web1", "--reason"},
                       {"--domain", "web1", "--reason"},
                       {"--domain=web1", "--reason"},
                       {"--reason", "--", "web1"}}) {
        auto r = parse_command(*find_command("domstate"), words);
        ASSERT_TRUE(std::holds_alternative<Command>(r)) << std::get<UsageError>(r).message;
        const auto& cmd = std::get<Command>(r);
        EXPECT_TRUE(cmd.has("reason"));
        ASSERT_NE(cmd.value("domain"), nullptr);
        EXPECT_EQ(*cmd.value("domain"), "web1");
    }
    // After "--" a word that looks like an option is data.
    auto r = parse_command(*find_command("domstate"), {"--", "--odd-name"});
    ASSERT_TRUE(std::holds_alternative<Command>(r));
    EXPECT_EQ(*std::get<Command>(r).value("domain"), "--odd-name");
}

TEST(CommandOptions, VirshErrors) {
    EXPECT_EQ(command_error("list", {"--al"}), "command 'list' doesn't support option --al");
    EXPECT_EQ(command_error("list", {"extra"}), "unexpected data 'extra'");
    EXPECT_EQ(command_error("list", {"--name=x"}), "invalid '=' after option --name");
    EXPECT_EQ(command_error("list", {"--all", "--all"}), "option --all already seen");
    EXPECT_EQ(command_error("domstate", {}), "command 'domstate' requires <domain> option");
    EXPECT_EQ(command_error("domstate", {"--domain"}), "expected syntax: --domain <string>");
    EXPECT_EQ(command_error("domstate", {"a", "b"}), "unexpected data 'b'");
    EXPECT_EQ(command_error("domstate", {"a", "--", "--reason"}), "unexpected data '--reason'");
    EXPECT_EQ(command_error("dominfo", {"--reason", "a"}),
              "command 'dominfo' doesn't support option --reason");
}

TEST(Refusal, StateChangingCommandsNameTheVmhaVerb) {
    EXPECT_EQ(refusal("start", "web1"), "vmha-virsh is read-only: use 'vmha start web1'");
    EXPECT_EQ(refusal("destroy", "web1"), "vmha-virsh is read-only: use 'vmha stop web1'");
    EXPECT_EQ(refusal("shutdown", "MODULE"), "vmha-virsh is read-only: use 'vmha stop MODULE'");
    EXPECT_EQ(refusal("reboot", "db"), "vmha-virsh is read-only: use 'vmha restart db'");
    EXPECT_EQ(refusal("migrate", "db"), "vmha-virsh is read-only: use 'vmha swap db'");
    EXPECT_EQ(refusal("suspend", "db"), "vmha-virsh is read-only: use 'vmha stop db'");
    EXPECT_EQ(refusal("resume", "db"), "vmha-virsh is read-only: use 'vmha start db'");
    EXPECT_NE(refusal("undefine", "db")->find("module file"), std::string::npos);
    EXPECT_NE(refusal("dumpxml", "db")->find("does not implement 'dumpxml'"), std::string::npos);
    EXPECT_EQ(refusal("snapshot-create", "db"),
              "vmha-virsh is read-only: use 'vmha verify db' or 'vmha resync db' (imagesyncd "
              "replicates the disks; snapshots would fork them)");
    EXPECT_FALSE(refusal("foo", "db").has_value());
    // The commands vmha-virsh runs are not refused.
    for (const char* c :
         {"list", "domstate", "dominfo", "domblklist", "domid", "domuuid", "domname"}) {
        EXPECT_FALSE(refusal(c, "x").has_value()) << c;
        EXPECT_NE(find_command(c), nullptr) << c;
    }
}

}  // namespace
