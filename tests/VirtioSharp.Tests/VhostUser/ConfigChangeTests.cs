using System.Buffers.Binary;
using VirtioSharp.Block;
using VirtioSharp.Native;
using VirtioSharp.Tests.Support;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// A disk resized while a front-end is connected (vhost-user.rst, "Back-end communication"):
/// the back-end sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the channel the front-end gave it
/// with VHOST_USER_SET_BACKEND_REQ_FD, and GET_CONFIG then reads the new 5.2.4 capacity.
/// </summary>
public sealed class ConfigChangeTests
{
    private const ulong Small = 4 << 20, Large = 6 << 20;

    /// <summary>A connected stream socket pair, as QEMU makes with socketpair(2).</summary>
    private static (UnixFdSocket Ours, UnixFdSocket Theirs) SocketPair()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vs-bq-{Guid.NewGuid():N}"[..22]);
        using var listener = UnixFdSocket.Listen(path);
        try
        {
            var ours = UnixFdSocket.Connect(path);
            return (ours, listener.Accept());
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static byte[] ReadRaw(UnixFdSocket socket, int length)
    {
        Assert.True(FdPoll.WaitReadable(socket.Handle, TestFrontEnd.Timeout), "nothing arrived on the back-end's channel");
        var b = new byte[length];
        var fds = new List<SafeFdHandle>();
        Assert.True(socket.ReceiveExactly(b, fds, out _), "the back-end closed its channel");
        Assert.Empty(fds);
        return b;
    }

    private static ulong CapacityByGetConfig(TestFrontEnd f)
    {
        var request = new byte[ConfigSpaceHeader.Length + 8];
        new ConfigSpaceHeader(0, 8, 0).Write(request);
        f.Send(VhostUserRequest.GetConfig, request);
        var reply = f.Receive() ?? throw new IOException("connection closed");
        Assert.Equal(VhostUserRequest.GetConfig, reply.Header.Request);
        return BinaryPrimitives.ReadUInt64LittleEndian(reply.Payload.AsSpan(ConfigSpaceHeader.Length));
    }

    private static void GiveChannel(TestFrontEnd f, UnixFdSocket theirs) =>
        f.Do(VhostUserRequest.SetBackendReqFd, default, theirs.Handle);

    [Fact]
    public void Back_end_offers_CONFIG_and_BACKEND_REQ()
    {
        using var server = new TestServer(numQueues: 1);
        using var f = server.Connect();
        f.GetU64(VhostUserRequest.GetFeatures);
        var offered = f.GetU64(VhostUserRequest.GetProtocolFeatures);
        Assert.True(VhostUserFeatures.Has(offered, VhostUserFeatures.Config));
        Assert.True(VhostUserFeatures.Has(offered, VhostUserFeatures.BackendReq));
    }

    [Fact]
    public void Resize_sends_CONFIG_CHANGE_MSG_with_need_reply_and_GET_CONFIG_reads_the_new_capacity()
    {
        var disk = new ResizableBackend(Small, Large);
        using var server = new TestServer(numQueues: 1, backend: disk);
        using var f = server.Connect();
        f.Negotiate();
        Assert.True(VhostUserFeatures.Has(f.ProtocolFeatures, VhostUserFeatures.ReplyAck));
        var (ours, theirs) = SocketPair();
        using var backendChannel = ours;
        GiveChannel(f, theirs);
        theirs.Dispose(); // the back-end holds its own copy now
        f.SetMemTable();
        var q = f.SetupQueue(0);
        var block = new byte[512];
        Assert.Equal(BlkStatus.IoErr, q.Request(BlkRequestType.Out, Small / 512, block)); // 5.2.6.1: beyond capacity
        var generation = server.Device.ConfigGeneration;

        var resize = new Thread(() => disk.Resize(Large)); // blocks until the front-end answers
        resize.Start();

        // vhost-user.rst, "Header": request 2 (CONFIG_CHANGE_MSG), flags version 1 | need_reply (bit 3), no payload.
        var header = ReadRaw(backendChannel, VhostUserHeader.Length);
        Assert.Equal(new byte[] { 2, 0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0 }, header);
        // As QEMU's vhost-user-blk does before it answers: read the config again.
        Assert.Equal(Large / 512, CapacityByGetConfig(f));
        Assert.NotEqual(generation, server.Device.ConfigGeneration);
        Assert.True(resize.IsAlive, "the back-end did not wait for the front-end's answer");
        // The answer: same request, reply flag (bit 2) and version, one u64 of 0.
        backendChannel.Send([2, 0, 0, 0, 0x05, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Assert.True(resize.Join(TestFrontEnd.Timeout), "the resize did not finish after the answer");
        server.WaitForLog("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), acknowledged");
        Assert.Equal(BlkStatus.Ok, q.Request(BlkRequestType.Out, Small / 512, block)); // the new area is served
        Assert.Equal(BlkStatus.IoErr, q.Request(BlkRequestType.Out, Large / 512, block));
    }

    [Fact]
    public void Without_REPLY_ACK_the_message_asks_no_reply()
    {
        var disk = new ResizableBackend(Small, Large);
        using var server = new TestServer(numQueues: 1, backend: disk);
        using var f = server.Connect();
        f.Negotiate(replyAck: false);
        var (ours, theirs) = SocketPair();
        using var backendChannel = ours;
        GiveChannel(f, theirs);
        theirs.Dispose();
        Assert.Equal(Small / 512, CapacityByGetConfig(f)); // the channel was taken before the resize

        disk.Resize(Large); // returns at once: nothing to wait for

        Assert.Equal(new byte[] { 2, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0 }, ReadRaw(backendChannel, VhostUserHeader.Length));
        server.WaitForLog("no reply asked");
        Assert.Equal(Large / 512, CapacityByGetConfig(f));
    }

    [Fact]
    public void A_front_end_without_BACKEND_REQ_is_sent_nothing_and_the_log_says_the_guest_was_not_told()
    {
        var disk = new ResizableBackend(Small, Large);
        using var server = new TestServer(numQueues: 1, backend: disk);
        using var f = server.Connect();
        f.GetU64(VhostUserRequest.GetFeatures);
        var protocol = f.GetU64(VhostUserRequest.GetProtocolFeatures) & ~VhostUserFeatures.Bit(VhostUserFeatures.BackendReq);
        f.Send(VhostUserRequest.SetProtocolFeatures, TestFrontEnd.U64(protocol));
        // SET_BACKEND_REQ_FD is refused without the feature, and the socket is not kept.
        var (ours, theirs) = SocketPair();
        using var backendChannel = ours;
        Assert.NotEqual(0UL, f.SendWithAck(VhostUserRequest.SetBackendReqFd, default, theirs.Handle));
        theirs.Dispose();

        disk.Resize(Large);

        server.WaitForLog("the guest was not told: the front-end did not negotiate VHOST_USER_PROTOCOL_F_BACKEND_REQ");
        Assert.False(FdPoll.WaitReadable(backendChannel.Handle, 200) && ReadsSomething(backendChannel), "the back-end sent something anyway");
        Assert.Equal(Large / 512, CapacityByGetConfig(f)); // a later read of the config sees the new size
    }

    /// <summary>True when the socket holds bytes (not just the hang-up of the back-end dropping its copy).</summary>
    private static bool ReadsSomething(UnixFdSocket socket)
    {
        var b = new byte[1];
        return socket.Receive(b, [], out _) > 0;
    }

    [Fact]
    public void A_front_end_that_never_answers_costs_one_timeout_and_the_channel_is_dropped()
    {
        var disk = new ResizableBackend(Small, Large);
        using var server = new TestServer(numQueues: 1, backend: disk, messageTimeout: TimeSpan.FromMilliseconds(300));
        using var f = server.Connect();
        f.Negotiate();
        var (ours, theirs) = SocketPair();
        using var backendChannel = ours;
        GiveChannel(f, theirs);
        theirs.Dispose();

        disk.Resize(Large); // waits at most the message timeout

        server.WaitForLog("configuration change not delivered: no reply within 0.3 s");
        Assert.Equal(VhostUserHeader.Length, ReadRaw(backendChannel, VhostUserHeader.Length).Length);
        disk.Resize(Small);
        server.WaitForLog("the front-end sent no VHOST_USER_SET_BACKEND_REQ_FD");
        Assert.Equal(Small / 512, CapacityByGetConfig(f));
    }
}
