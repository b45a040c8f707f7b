using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Queues;
using Xunit;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A back-end that comes back on the same socket after the last one died: the rings live on in
/// guest memory, with whatever the dead back-end left in them.
/// </summary>
public class RestartTests
{
    /// <summary>
    /// 2.7.7.2 with VIRTIO_F_EVENT_IDX: the driver asks to be interrupted when used idx passes
    /// used_event. A back-end killed between moving used idx and signalling the call leaves used
    /// idx past used_event with no interrupt sent. The next back-end must not take that gap as
    /// "already notified": it signals when its ring starts and after its first used batch, or the
    /// driver never looks at the used ring again.
    /// </summary>
    [Fact]
    public void ARingStartedAfterACrashNotifiesUsedElementsTheLastBackendNeverSignalled()
    {
        using var server = new TestServer(numQueues: 1);
        using var fe = server.Connect();
        fe.Negotiate();
        fe.SetMemTable();
        var q = fe.SetupQueue(0, size: 16, eventIdx: true);
        for (var i = 0; i < 3; i++)
            Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, (ulong)i, new byte[512]));
        // The driver has seen 3 used elements and asked to hear about the 4th (used_event = 3).

        // A fourth request goes into the available ring; then the back-end "dies": we complete the
        // request in guest memory as it would have, move used idx, and never signal.
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(fe.Memory.GetSpan(q.Header, 16));
        Assert.True(q.Driver.TryAdd([new(q.Header, 16, false), new(q.Status, 1, true)], out var head));
        q.Driver.Publish(); // no kick: the old back-end took it without one
        fe.Disconnect();
        server.WaitForLog("waiting for the next front-end");
        fe.Memory.GetSpan(q.Status, 1)[0] = (byte)BlkStatus.Ok;
        var used = fe.Memory.GetSpan(q.DeviceArea, 4 + 8 * 16);
        BinaryPrimitives.WriteUInt32LittleEndian(used[(4 + 8 * 3)..], head);
        BinaryPrimitives.WriteUInt32LittleEndian(used[(8 + 8 * 3)..], 1);
        BinaryPrimitives.WriteUInt16LittleEndian(used[2..], 4);
        while (q.Call.TryRead(out _)) { }

        // QEMU cannot ask a dead back-end where it stopped: it rewinds the ring to used idx.
        fe.ConnectAgain(server.SocketPath);
        fe.Negotiate();
        fe.SetMemTable();
        fe.ResumeQueue(q, baseIndex: 4);
        Assert.True(q.Call.Wait(TestFrontEnd.Timeout), "the restarted ring never signalled the used element left by the last back-end");
        Assert.True(q.Call.TryRead(out _));

        // The driver has not looked yet (used_event is still 3). The new back-end's first used
        // batch (4 -> 5) does not cross used_event by the 2.7.7.2 formula, yet must be signalled.
        new BlkRequestHeader((uint)BlkRequestType.Flush, 0, 0).Write(fe.Memory.GetSpan(q.Header, 16));
        fe.Memory.GetSpan(q.Status, 1)[0] = 0xff;
        var statusB = fe.Allocator.Allocate(16);
        Assert.True(q.Driver.TryAdd([new(q.Header, 16, false), new(statusB, 1, true)], out var headB));
        q.Driver.Publish();
        q.Kick.Signal();
        Assert.True(q.Call.Wait(TestFrontEnd.Timeout), "the first used batch after the restart was not signalled");
        Assert.Equal(1u, q.WaitUsed(head));
        Assert.Equal(1u, q.WaitUsed(headB));
        Assert.Equal((byte)BlkStatus.Ok, fe.Memory.GetSpan(statusB, 1)[0]);
    }
}
