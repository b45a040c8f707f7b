using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.Conformance;

/// <summary>
/// Strict mode behind the vhost-user back-end: vhost-user has no status register, so with
/// strict=fail the back-end answers the offending request, stops the queue, signals the error
/// descriptor and logs why; with strict=warn it logs and carries on. Either way the breaches are
/// summed up by section when the front-end disconnects, and the next front-end starts afresh.
/// </summary>
public sealed class VhostUserStrictTests
{
    private const string FlushBreach = "driver breach: spec 5.2.6.1: queue 0 descriptor 0: expected sector 0 in a FLUSH request; found sector 9";

    /// <summary>Offers a FLUSH without waiting for it; true when it came back within <paramref name="ms"/>.</summary>
    private static bool Answered(TestQueue q, int ms)
    {
        Assert.True(q.Driver.TryAdd([new(q.Header, 16, false), new(q.Status, 1, true)], out _));
        if (q.Driver.Publish())
            q.Kick.Signal();
        var deadline = Environment.TickCount64 + ms;
        while (Environment.TickCount64 < deadline)
        {
            if (q.Driver.TryTakeUsed(out _, out _, out _))
                return true;
            Thread.Sleep(5);
        }
        return false;
    }

    [Fact]
    public void Strict_fail_answers_the_request_stops_the_queue_and_sums_up_on_disconnect()
    {
        using var server = new TestServer(strict: StrictMode.Fail);
        var fe = server.Connect();
        try
        {
            fe.Negotiate();
            fe.SetMemTable();
            var q = fe.SetupQueue(0);
            using var err = EventFd.Create();
            fe.Do(VhostUserRequest.SetVringErr, TestFrontEnd.U64(0), err.Handle);

            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 9, default)); // the FLUSH itself is served
            Assert.True(err.Wait(TestFrontEnd.Timeout), "the error descriptor was not signalled");
            server.WaitForLog("queue 0: stopped, device needs reset: strict mode stopped at the first driver breach");
            Assert.True(server.Log.Contains(FlushBreach), server.Dump());
            Assert.False(Answered(q, 200), "the queue went on after the breach");
        }
        finally
        {
            fe.Dispose();
        }
        server.WaitForLog("driver breaches: 1 (5.2.6.1 x1)");

        // A new front-end (the guest after its reset) is served from a clean slate.
        TestServer.Eventually(() => server.Server.SessionsEnded == 1, "the connection to end");
        using var next = server.Connect();
        next.Negotiate();
        next.SetMemTable();
        Assert.Equal(BlkStatus.Ok, next.SetupQueue(0).Request(BlkRequestType.Flush, 0, default));
        Assert.Equal(0, server.Device.Breaches.Total);
    }

    [Fact]
    public void Strict_warn_logs_and_carries_on()
    {
        using var server = new TestServer(strict: StrictMode.Warn);
        using (var fe = server.Connect())
        {
            fe.Negotiate();
            fe.SetMemTable();
            var q = fe.SetupQueue(0);
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 9, default));
            Assert.True(server.Log.Contains(FlushBreach), server.Dump());
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, 0, new byte[512]));
            Assert.Equal(BlkStatus.IoErr, q.Request(BlkRequestType.In, 0, new byte[100])); // 5.2.6.1, answered IOERR
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 0, default));
        }
        server.WaitForLog("driver breaches: 2 (5.2.6.1 x2)");
    }

    [Fact]
    public void Strict_off_says_nothing_of_strict_only_rules()
    {
        using var server = new TestServer();
        using (var fe = server.Connect())
        {
            fe.Negotiate();
            fe.SetMemTable();
            var q = fe.SetupQueue(0);
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 9, default));
            Assert.Equal(BlkStatus.IoErr, q.Request(BlkRequestType.In, 0, new byte[100]));
        }
        server.WaitForLog("driver breaches: 1 (5.2.6.1 x1)");
        Assert.False(server.Log.Contains("FLUSH request"), server.Dump());
    }

    [Fact]
    public void Version_1_not_acknowledged_stops_the_rings_with_strict_fail_6_1()
    {
        using var server = new TestServer(strict: StrictMode.Fail);
        using (var fe = server.Connect())
        {
            fe.Negotiate(version1: false);
            fe.SetMemTable();
            var q = fe.SetupQueue(0);
            server.WaitForLog("queue 0: stopped, device needs reset: strict mode stopped at the first driver breach");
            Assert.True(server.Log.Contains("driver breach: spec 6.1: device: expected VIRTIO_F_VERSION_1 accepted; found bit 32 clear in VHOST_USER_SET_FEATURES"), server.Dump());
            Assert.False(Answered(q, 200));
        }
        server.WaitForLog("driver breaches: 1 (6.1 x1)");
    }

    [Fact]
    public void An_identical_SET_FEATURES_repeated_in_one_start_gives_one_report_and_one_summary_6_1()
    {
        const string Breach = "driver breach: spec 6.1";
        const string Summary = "driver breaches: 1 (6.1 x1)";
        using var server = new TestServer(strict: StrictMode.Warn);
        int Count(string text) => server.Log.Lines.Count(l => l.Message.Contains(text, StringComparison.Ordinal));
        using (var fe = server.Connect())
        {
            // What Negotiate acknowledged: the offer less VERSION_1 and packed rings (this front-end writes split rings).
            var acked = fe.Negotiate(version1: false) & ~VirtioFeatures.Bit(VirtioFeatures.Version1) & ~VirtioFeatures.Bit(VirtioFeatures.RingPacked);
            // QEMU 7.2 sends SET_FEATURES twice per start: for the in-flight region, then in vhost_dev_start.
            fe.Do(VhostUserRequest.SetFeatures, TestFrontEnd.U64(acked));
            fe.SetMemTable();
            var q = fe.SetupQueue(0);
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Flush, 0, default));
            Assert.True(Count(Breach) == 1 && Count("driver breaches:") == 0, server.Dump());

            // The device stops and starts again: a new start, so the last one is summed up once.
            fe.GetVringBase(0);
            fe.Do(VhostUserRequest.SetFeatures, TestFrontEnd.U64(acked));
            fe.Do(VhostUserRequest.SetFeatures, TestFrontEnd.U64(acked));
            Assert.True(Count(Breach) == 2 && Count(Summary) == 1, server.Dump());
        }
        TestServer.Eventually(() => Count(Summary) == 2, "the second start's summary");
        Assert.Equal(2, Count(Breach));
    }
}
