using System.Text.RegularExpressions;

namespace VirtioSharp.Tests.Vm;

/// <summary>
/// A real Linux guest (QEMU with reconnect=1) runs fio with crc32c verify at depth 16 over 2
/// queues while `vblk serve` is stopped and started again on the same socket and image, a few
/// times while fio writes and a few times while it verifies. The back-end holds each completion
/// for a while (--debug-hold-completions-ms), so a kill lands on requests taken and not yet
/// returned, returned out of ring order; the next back-end finds them in the inflight record
/// and does them again. fio must pass, the guest's kernel must log no I/O error, and fio run on
/// the host over the image afterwards must verify every block.
/// </summary>
[Trait("Category", "Vm")]
public sealed partial class VmRestartTests
{
    private const int RestartMiB = 24;      // per fio job; two jobs
    private const int KillsPerPhase = 3;
    private const int HoldMs = 40;

    private sealed record Stop(string Phase, int ExitCode, string Log);

    [Theory]
    [InlineData(9)]  // SIGKILL: nothing finishes; the inflight record carries the requests over
    [InlineData(15)] // SIGTERM: stop taking requests, finish those in flight, flush, exit 0
    public void Guest_fio_verify_passes_while_the_back_end_is_restarted(int signal) => RestartRun(signal, packed: false, KillsPerPhase, HoldMs);

    /// <summary>
    /// The same over packed rings (QEMU packed=on), one SIGKILL while fio writes and one while it
    /// verifies. QEMU cannot learn a packed ring's position from a dead back-end and hands the next
    /// one the position it last had; the packed inflight record says where the ring stands and
    /// which lists to do again (their slots may hold used descriptors by then). With only two
    /// kills, completions are held longer, so each is likely to land on requests in flight.
    /// </summary>
    [Fact]
    public void Guest_fio_verify_passes_over_packed_rings_while_the_back_end_is_killed() => RestartRun(9, packed: true, killsPerPhase: 1, holdMs: 250);

    private static void RestartRun(int signal, bool packed, int killsPerPhase, int holdMs)
    {
        LinuxGuest.EnsureBuilt();
        var workDir = Directory.CreateTempSubdirectory("vblk-restart-").FullName;
        try
        {
            var image = Path.Combine(workDir, "disk.img");
            using (var f = new FileStream(image, FileMode.CreateNew))
                f.SetLength(256L << 20);
            var socket = Path.Combine(workDir, "vblk.sock");
            var console = LinuxGuest.ConsoleLog(workDir, "fio-restart");
            BackgroundProcess Start()
            {
                var p = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", image, "--socket", socket, "--num-queues", "2",
                    "--debug-hold-completions-ms", holdMs.ToString()]);
                p.WaitForSocket(socket, TimeSpan.FromSeconds(30));
                return p;
            }

            var server = Start();
            var stops = new List<Stop>();
            try
            {
                LinuxGuest.Run? run = null;
                var guest = new Thread(() => run = LinuxGuest.Boot(socket, "fio-restart", vcpus: 2, queues: 2, workDir,
                    $"vblk.restart_mib={RestartMiB}", reconnect: true, timeoutSeconds: 480, packed: packed));
                guest.Start();
                var startedAt = DateTime.UtcNow;
                string? lastPhase = null;
                while (guest.IsAlive)
                {
                    Thread.Sleep(200);
                    var phase = Phase(console);
                    if (phase != lastPhase)
                    {
                        lastPhase = phase;
                        startedAt = DateTime.UtcNow; // fio needs a moment to start its jobs
                    }
                    if (phase is not ("write" or "verify") || stops.Count(s => s.Phase == phase) >= killsPerPhase)
                        continue;
                    // Kill only once both rings run again and fio has had a moment to fill them.
                    if (!server.Output.Contains("queue 1: started", StringComparison.Ordinal))
                    {
                        startedAt = DateTime.UtcNow;
                        continue;
                    }
                    if (DateTime.UtcNow - startedAt < TimeSpan.FromSeconds(2.5))
                        continue;
                    var code = server.Signal(signal, TimeSpan.FromSeconds(30));
                    var log = server.Output;
                    server.Dispose();
                    if (signal == 9)
                        File.Delete(socket); // the dead back-end's; QEMU retries until the new one listens
                    Thread.Sleep(1000);
                    server = Start();
                    startedAt = DateTime.UtcNow;
                    stops.Add(new Stop(phase, code, log));
                }
                guest.Join();
                var finalExit = server.Signal(15, TimeSpan.FromSeconds(30));
                var finalLog = server.Output;

                // Requests found in flight by each restarted back-end: those its predecessor left.
                var logs = stops.Select(s => s.Log).Append(finalLog).ToList();
                var inFlight = Enumerable.Range(0, stops.Count).Select(i => InFlightFound(logs[i + 1])).ToList();
                var summary = $"stops ({(signal == 9 ? "SIGKILL" : "SIGTERM")}): "
                    + string.Join(", ", stops.Select((s, i) => $"{s.Phase}: exit {s.ExitCode}, {inFlight[i]} in flight"))
                    + $"\n{run?.Output}\n--- last back-end ---\n{finalLog}";

                Assert.NotNull(run);
                Assert.True(run.Verdict("fio-restart").StartsWith("PASS", StringComparison.Ordinal), $"guest job: {run.Verdict("fio-restart")}\n{summary}");
                Console.WriteLine(summary.Split('\n')[0]); // the per-stop figures, for the test log
                // Up to KillsPerPhase stops in each phase; a phase can end before the last one is due.
                Assert.True(stops.Count(s => s.Phase == "write") >= 1 && stops.Count(s => s.Phase == "verify") >= 1, $"the back-end was not stopped in both phases\n{summary}");
                Assert.True(finalExit == 0, $"the last back-end exited with {finalExit} on SIGTERM\n{summary}");
                if (packed)
                {
                    // The guest's driver chose packed rings, and every restarted back-end resumed them.
                    Assert.All(logs, l => Assert.Contains("queue 0: started: packed ring", l, StringComparison.Ordinal));
                    Assert.All(stops, s => Assert.Equal(137, s.ExitCode));
                    // QEMU hands each new back-end the stale base it had from the ring's start; every one
                    // resumed where the packed inflight record said the ring stood.
                    Assert.All(logs.Skip(1), l => Assert.Contains("the inflight record says avail slot", l, StringComparison.Ordinal));
                    Assert.All(logs, l => Assert.DoesNotContain("inflight record ignored", l, StringComparison.Ordinal));
                }
                else if (signal == 9)
                {
                    Assert.All(stops, s => Assert.Equal(137, s.ExitCode));
                    // Kills landed on requests taken and not returned, and the next back-end did them again.
                    // Under TCG the guest sometimes has nothing outstanding at the instant (fio starting
                    // a phase, or reading at depth 1 while it verifies); most kills must still land on some.
                    Assert.True(inFlight.Count(n => n > 0) * 2 >= stops.Count, $"fewer than half the kills found requests in flight\n{summary}");
                    Assert.True(stops.Select((s, i) => (s.Phase, n: inFlight[i])).Where(x => x.Phase == "write").Sum(x => x.n) > 0, $"no kill while fio wrote found requests in flight\n{summary}");
                    Assert.True(stops.Select((s, i) => (s.Phase, n: inFlight[i])).Where(x => x.Phase == "verify").Sum(x => x.n) > 0, $"no kill while fio verified found requests in flight\n{summary}");
                }
                else
                {
                    Assert.All(stops, s => Assert.Equal(0, s.ExitCode));
                    Assert.All(stops, s => Assert.Contains("stopping (SIGTERM)", s.Log, StringComparison.Ordinal));
                    // A graceful stop finishes what it took: nothing is left for the next back-end.
                    Assert.True(inFlight.All(n => n == 0), $"a graceful stop left requests in flight\n{summary}");
                }
                Assert.All(logs, l => Assert.DoesNotContain("needs reset", l, StringComparison.OrdinalIgnoreCase));

                // The host reads the image with the same fio jobs: every block carries its checksum.
                var (code2, fio) = Repo.Run("fio", [
                    $"--filename={image}", "--ioengine=psync", "--rw=randwrite", "--bsrange=4k-64k", $"--size={RestartMiB}M",
                    "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--verify_only", "--group_reporting",
                    "--name=vblk-restart-0", "--offset=96M", "--name=vblk-restart-1", $"--offset={96 + RestartMiB}M"], TimeSpan.FromMinutes(2));
                Assert.True(code2 == 0 && !fio.Contains("verify failed", StringComparison.Ordinal), $"host-side fio verify of the image: exit {code2}\n{fio}");
            }
            finally
            {
                server.Dispose();
            }
        }
        finally
        {
            Directory.Delete(workDir, recursive: true);
        }
    }

    private static string? Phase(string console)
    {
        if (!File.Exists(console))
            return null;
        string text;
        using (var f = new FileStream(console, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        using (var r = new StreamReader(f))
            text = r.ReadToEnd();
        var m = PhaseLine().Matches(text);
        return m.Count == 0 ? null : m[^1].Groups[1].Value;
    }

    private static int InFlightFound(string log) =>
        InFlightLine().Matches(log).Sum(m => int.Parse(m.Groups[1].Value));

    [GeneratedRegex(@"VBLK-PHASE (\w+)")]
    private static partial Regex PhaseLine();

    [GeneratedRegex(@"inflight record: (\d+) requests? in flight")]
    private static partial Regex InFlightLine();
}
