using VirtioSharp.Block;
using VirtioSharp.Driver;
using VirtioSharp.VhostUser;

namespace VirtioSharp.Cli.Frontend;

/// <summary>Runs a command body and turns expected failures into one line on stderr and a non-zero exit code
/// (2 for a usage mistake, 1 for a failure), as <see cref="CliRunner"/> does for the other commands.</summary>
internal static class CliErrors
{
    public static async Task<int> RunAsync(string command, TextWriter error, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (OperationCanceledException)
        {
            error.WriteLine($"vblk {command}: interrupted");
            return 130;
        }
        catch (Exception e) when (IsExpected(e))
        {
            error.WriteLine($"vblk {command}: {Describe(e)}");
            return e is CliException { IsUsage: true } or ArgumentException ? CliRunner.UsageError : CliRunner.Failure;
        }
        catch (Exception e)
        {
            // Not an expected mistake, but still one line unless asked for the trace.
            error.WriteLine($"vblk {command}: internal error: {e.GetType().Name}: {e.Message}");
            if (Environment.GetEnvironmentVariable("VBLK_TRACE") == "1")
                error.WriteLine(e.ToString());
            return 2;
        }
    }

    private static bool IsExpected(Exception e) => e is CliException or VhostUserException or VirtioDeviceException or BlkException
        or IOException or UnauthorizedAccessException or ArgumentException or InsufficientMemoryException;

    private static string Describe(Exception e) => e switch
    {
        ArgumentException { ParamName: { } p } a => a.Message.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal),
        _ => e.Message,
    };
}
