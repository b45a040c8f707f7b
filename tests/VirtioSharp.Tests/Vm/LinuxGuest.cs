using System.Text;
using System.Text.RegularExpressions;

namespace VirtioSharp.Tests.Vm;

/// <summary>
/// Boots the test guest (Debian's Linux kernel with a busybox initramfs, built by
/// scripts/build-guest.sh) under QEMU TCG with a vhost-user-blk disk on a socket, runs the named
/// jobs in it, and collects each job's verdict from the serial console.
/// </summary>
public sealed partial class LinuxGuest
{
    public static void EnsureBuilt()
    {
        var (code, output) = Repo.Run(Repo.Script("build-guest.sh"), [], TimeSpan.FromMinutes(10));
        if (code != 0)
            throw new InvalidOperationException($"scripts/build-guest.sh failed ({code}):\n{output}");
    }

    public sealed record Run(int ExitCode, string Output, IReadOnlyDictionary<string, string> Verdicts, double? BootSeconds)
    {
        public string Verdict(string job) => Verdicts.TryGetValue(job, out var v) ? v : "no verdict";
    }

    /// <summary>Where <see cref="Boot"/> writes the serial console of a run of <paramref name="jobs"/>.</summary>
    public static string ConsoleLog(string workDir, string jobs) => Path.Combine(workDir, $"console-{jobs.Replace(',', '_')}.log");

    public static Run Boot(string socket, string jobs, int vcpus, int queues, string workDir, string extraAppend = "", bool reconnect = false, int timeoutSeconds = 480, bool packed = false)
    {
        var log = ConsoleLog(workDir, jobs);
        var args = new List<string> { "--socket", socket, "--jobs", jobs, "--vcpus", vcpus.ToString(), "--queues", queues.ToString(), "--timeout", timeoutSeconds.ToString(), "--log", log, "--quiet" };
        if (extraAppend.Length > 0)
            args.AddRange(["--extra-append", extraAppend]);
        if (reconnect)
            args.Add("--reconnect");
        if (packed)
            args.Add("--packed"); // vhost-user-blk-pci packed=on: the guest's driver may choose packed rings
        var (code, output) = Repo.Run(Repo.Script("run-guest.sh"), args, TimeSpan.FromSeconds(timeoutSeconds + 60));
        var verdicts = new Dictionary<string, string>();
        foreach (Match m in ResultLine().Matches(output))
            verdicts[m.Groups[1].Value] = m.Groups[2].Value.Trim();
        double? boot = null;
        if (BootLine().Match(output) is { Success: true } b && double.TryParse(b.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture, out var s))
            boot = s;
        var console = File.Exists(log) ? File.ReadAllText(log) : "";
        return new Run(code, output + "\n--- console ---\n" + console, verdicts, boot);
    }

    [GeneratedRegex(@"^RESULT (\S+) (.*)$", RegexOptions.Multiline)]
    private static partial Regex ResultLine();

    [GeneratedRegex(@"^BOOT-SECONDS ([0-9.]+)", RegexOptions.Multiline)]
    private static partial Regex BootLine();

    /// <summary>The guest's write-read pattern (scripts/guest-init make_pattern): 32-byte lines, 128 per 4 KiB block.</summary>
    public static byte[] Pattern(int offsetMiB, int sizeMiB)
    {
        var sb = new StringBuilder(sizeMiB << 20);
        var first = offsetMiB * 256;
        for (var b = 0; b < sizeMiB * 256; b++)
        {
            for (var r = 0; r < 128; r++)
                sb.Append("VBLK-PATTERN-").Append((first + b).ToString("D8")).Append('-').Append(r.ToString("D9")).Append('\n');
        }
        return Encoding.ASCII.GetBytes(sb.ToString());
    }

    public static byte[] ReadImage(string image, long offset, int length)
    {
        using var f = File.OpenRead(image);
        f.Position = offset;
        var buffer = new byte[length];
        f.ReadExactly(buffer);
        return buffer;
    }
}
