using System.CommandLine;

namespace VirtioSharp.Cli;

/// <summary>Runs the command line: parse errors and expected failures are one line on stderr, never a stack trace.</summary>
public static class CliRunner
{
    public const int UsageError = 2;
    public const int Failure = 1;

    public static async Task<int> RunAsync(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            var command = parse.CommandResult.Command;
            var name = command == root ? "vblk" : $"vblk {CommandPath(parse.CommandResult)}";
            var message = string.Join(' ', parse.Errors[0].Message.Split(['\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            Console.Error.WriteLine($"{name}: {message} (see '{name} --help')");
            return UsageError;
        }
        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (e is CliException or IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or VirtioSharp.Driver.VirtioDeviceException)
        {
            Console.Error.WriteLine($"vblk: {e.Message}");
            return e is CliException { IsUsage: true } or ArgumentException ? UsageError : Failure;
        }
    }

    private static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new List<string>();
        for (var r = result; r is not null && r.Parent is System.CommandLine.Parsing.CommandResult parent; r = parent)
            names.Insert(0, r.Command.Name);
        return string.Join(' ', names);
    }
}

/// <summary>An expected failure to report as one line (IsUsage: bad arguments, exit 2).</summary>
public sealed class CliException(string message, bool isUsage = false) : Exception(message)
{
    public bool IsUsage { get; } = isUsage;
}
