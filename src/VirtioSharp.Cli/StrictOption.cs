using System.CommandLine;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli;

/// <summary>The shared `--strict[=off|warn|fail]` option: absent = off, bare = warn.</summary>
public static class StrictOption
{
    public static Option<string?> Create()
    {
        var option = new Option<string?>("--strict")
        {
            Description = "Check every driver requirement the device can observe and name each breach with its spec section: "
                + "--strict or --strict=warn logs and carries on, --strict=fail sets DEVICE_NEEDS_RESET at the first breach.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        option.AcceptOnlyFromAmong("off", "warn", "fail");
        return option;
    }

    public static StrictMode Parse(ParseResult parse, Option<string?> option)
    {
        if (parse.GetResult(option) is null)
            return StrictMode.Off;
        return parse.GetValue(option) switch
        {
            null or "warn" => StrictMode.Warn,
            "fail" => StrictMode.Fail,
            _ => StrictMode.Off,
        };
    }
}
