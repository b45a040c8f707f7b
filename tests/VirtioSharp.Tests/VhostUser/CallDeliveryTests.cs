using VirtioSharp.Block;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Backend;
using VirtioSharp.VhostUser.Protocol;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// Each drain signals the call for what it used, whether the front-end's call eventfd is
/// non-blocking or not, and whether the worker waits in io_uring or poll(2): every request the
/// driver asked to hear about is signalled by the drain that used it, not by the watchdog that
/// resends lost interrupts. (A worker that receives an NBD server's replies itself sends its
/// call through its ring: NbdWorkerReceiveTests.)
/// </summary>
public class CallDeliveryTests
{
    [Fact]
    public void An_eventfd_says_whether_it_has_O_NONBLOCK()
    {
        using var nonBlocking = EventFd.Create();
        using var blocking = EventFd.Create(nonBlocking: false);
        Assert.True(nonBlocking.IsNonBlocking);
        Assert.False(blocking.IsNonBlocking);
    }

    [Theory]
    [InlineData(true, false, AioMode.Auto)]
    [InlineData(false, false, AioMode.Auto)]
    [InlineData(true, true, AioMode.Auto)]
    [InlineData(true, false, AioMode.Sync)] // the worker waits in poll(2)
    [InlineData(true, true, AioMode.Sync)]
    public void Every_request_is_signalled_by_its_drain(bool nonBlockingCall, bool packed, AioMode aio)
    {
        const int requests = 200;
        using var server = new TestServer(numQueues: 1, aio: aio);
        using var fe = server.Connect();
        fe.Negotiate(packed: packed);
        fe.SetMemTable();
        var q = fe.SetupQueue(0, eventIdx: true, packed: packed);
        using var call = EventFd.Create(nonBlockingCall);
        fe.Do(VhostUserRequest.SetVringCall, TestFrontEnd.U64(0), call.Handle);
        var data = new byte[4096];
        var watchdog = server.Server.Watchdogs[0];
        var resentBefore = watchdog.Resent;
        for (var i = 0; i < requests; i++)
        {
            Assert.False(q.Driver.EnableInterrupts()); // 2.7.7: tell me about the next used buffer
            var head = q.Submit(BlkRequestType.In, (ulong)i * 8, data);
            ushort used;
            UsedError error;
            var deadline = Environment.TickCount64 + TestFrontEnd.Timeout;
            while (!q.Driver.TryTakeUsed(out used, out _, out error))
            {
                // A blocking read: the call must come, and only a call ends it.
                Assert.True(call.Wait((int)Math.Max(1, deadline - Environment.TickCount64)), $"request {i}: no call");
                Assert.True(call.TryRead(out _));
            }
            Assert.Equal(head, used);
            Assert.Equal(UsedError.None, error);
            Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(q.Status, 1)[0]);
        }
        // A call the drain failed to send would be sent again by the watchdog after 10 ms, once per
        // request; a busy machine may delay a few drivers' reads that long.
        Assert.True(watchdog.Resent - resentBefore < requests / 10, $"{watchdog.Resent - resentBefore} calls sent again by the watchdog");
    }
}
