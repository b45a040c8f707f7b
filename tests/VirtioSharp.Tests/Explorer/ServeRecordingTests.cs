using System.Text.Json;
using VirtioSharp.Block;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;
using static VirtioSharp.Tests.Explorer.RecordingSteps;

namespace VirtioSharp.Tests.Explorer;

/// <summary>
/// <c>vblk serve --record</c> with our front-end (<c>vblk bench</c>) driving it over vhost-user: the
/// recording holds the kicks the device read, the calls it wrote, and each interrupt decision with
/// its reason; over packed rings, the packed ring's own events, and the page replays them.
/// </summary>
[Trait("Category", "Browser")]
public sealed class ServeRecordingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Serve_records_kicks_read_calls_written_and_why_an_interrupt_was_or_was_not_sent(bool packed)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.img");
        FileBackend.Create(image, 8 << 20);
        var socket = dir.File("vblk.sock");
        var recording = dir.File("rec.jsonl");
        string serverLog;
        using (var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", image, "--socket", socket, "--record", recording, "--record-limit", "60"]))
        {
            // The socket file appears once the server listens: no probe connection, which would take the first
            // recording file and could get the bench refused while its session ends. Two seconds: the
            // first requests of a recorded connection wait for the recording code to be compiled.
            server.WaitForSocket(socket, TimeSpan.FromSeconds(30));
            string[] bench = [Repo.VblkDll, "bench", "--socket", socket, "--rw", "randrw", "--iodepth", "8", "--runtime", "2", "--ramp", "0", .. packed ? new[] { "--packed" } : []];
            var (code, output) = Repo.Run("dotnet", bench, TimeSpan.FromMinutes(2));
            Assert.True(code == 0, $"vblk bench exited with {code}\n{output}");
            Assert.Equal(0, server.Stop(TimeSpan.FromSeconds(30)));
            serverLog = server.Output;
        }
        var file = new[] { recording, dir.File("rec-2.jsonl"), dir.File("rec-3.jsonl") }.Where(File.Exists)
            .Select(f => (f, Events(f))).LastOrDefault(x => x.Item2.Any(e => Kind(e) == "UsedRingWrite"));
        Assert.True(file.f is not null, $"no recording with a request in it\n{serverLog}");
        var events = file.Item2;

        var kicks = events.Where(e => Kind(e) == "Notification" && Actor(e) == "device" && Name(e) == "kick").ToList();
        Assert.NotEmpty(kicks);
        Assert.All(kicks, k => Assert.True(Value(k) >= 1, "a kick read with a count of 0"));
        var calls = events.Where(e => Kind(e) == "Interrupt" && Name(e) == "raised").ToList();
        Assert.NotEmpty(calls);
        Assert.All(calls, c => Assert.StartsWith("call eventfd written", c.GetProperty("text").GetString(), StringComparison.Ordinal));
        // Each decision names its reason: the event index (EVENT_IDX) or the flags (NO_INTERRUPT; packed: RING_EVENT_FLAGS_*).
        var decisions = events.Where(e => Kind(e) == "Interrupt" && Name(e) == "decision").ToList();
        Assert.NotEmpty(decisions);
        Assert.All(decisions, d => Assert.Matches(@"^(EVENT_IDX|NO_INTERRUPT|RING_EVENT_FLAGS|first batch)", d.GetProperty("why").GetString()!));
        // A call follows only a decision to interrupt: every suppressed decision has no call right after it.
        for (var k = 0; k + 1 < events.Count; k++)
        {
            if (Kind(events[k]) == "Interrupt" && Name(events[k]) == "decision" && events[k].TryGetProperty("sup", out _))
                Assert.False(Kind(events[k + 1]) == "Interrupt" && Name(events[k + 1]) == "raised" && Queue(events[k + 1]) == Queue(events[k]),
                    $"a call was written right after a suppressed decision (event {k + 1})");
        }
        if (packed)
        {
            Assert.Contains(events, e => Kind(e) == "EventSuppression" && Name(e) == "driver");
            Assert.All(events.Where(e => Kind(e) == "UsedRingWrite"), e => Assert.True(Packed(e), "a packed ring's used descriptor without its wrap counter"));
        }
        ExplorerBrowserTests.ViewAndCheck(file.f, dir.File("page.html"));
    }
}
