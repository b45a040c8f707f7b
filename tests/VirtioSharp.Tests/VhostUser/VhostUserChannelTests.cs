using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.Tests.VhostUser;

/// <summary>
/// How a receive that ends inside a message is told apart: the errno of the failed socket call is
/// carried as data (<see cref="VhostUserChannel.LastErrno"/>), so the front-end can tell its own
/// receive timeout (EAGAIN) from a peer that hung up.
/// </summary>
public sealed class VhostUserChannelTests
{
    private const int EConnReset = 104;

    /// <summary>A connected pair; the peer sends a header announcing 8 payload bytes and nothing more.</summary>
    private static (VhostUserChannel Channel, UnixFdSocket Peer) HeaderOnly(TempDir dir)
    {
        using var listener = UnixFdSocket.Listen(dir.File("c.sock"));
        var client = UnixFdSocket.Connect(dir.File("c.sock"));
        var peer = listener.Accept();
        Span<byte> header = stackalloc byte[VhostUserHeader.Length];
        VhostUserHeader.ForReply(VhostUserRequest.GetFeatures, U64Payload.Length).Write(header);
        peer.Send(header);
        return (new VhostUserChannel(client), peer);
    }

    [Fact]
    public void A_receive_timeout_inside_a_message_carries_EAGAIN()
    {
        using var dir = new TempDir();
        var (channel, peer) = HeaderOnly(dir);
        using (channel)
        using (peer)
        {
            channel.Socket.SetTimeouts(TimeSpan.FromMilliseconds(100));
            Assert.Equal(ReceiveStatus.Closed, channel.Receive(out _, out var problem));
            Assert.Equal(Errno.EAGAIN, channel.LastErrno);
            Assert.NotNull(problem);
        }
    }

    [Fact]
    public void A_peer_that_closes_inside_a_message_carries_no_errno()
    {
        using var dir = new TempDir();
        var (channel, peer) = HeaderOnly(dir);
        using (channel)
        {
            peer.Dispose();
            Assert.Equal(ReceiveStatus.Closed, channel.Receive(out _, out var problem));
            Assert.Equal(0, channel.LastErrno);
            Assert.Contains("connection closed inside the payload", problem);
        }
    }

    [Fact]
    public void A_peer_that_resets_inside_a_message_carries_ECONNRESET()
    {
        using var dir = new TempDir();
        var (channel, peer) = HeaderOnly(dir);
        using (channel)
        {
            channel.Socket.Send(new byte[1]); // left unread: closing now resets the connection
            peer.Dispose();
            channel.Socket.SetTimeouts(TimeSpan.FromMilliseconds(2000));
            Assert.Equal(ReceiveStatus.Closed, channel.Receive(out _, out _));
            Assert.Equal(EConnReset, channel.LastErrno);
        }
    }
}
