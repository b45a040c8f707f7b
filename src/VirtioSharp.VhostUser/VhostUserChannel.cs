using System.Net.Sockets;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser;

/// <summary>
/// One vhost-user connection: framed messages (header + payload) over a Unix stream socket,
/// with file descriptors as SCM_RIGHTS ancillary data. Not thread-safe; callers serialise.
/// </summary>
internal sealed class VhostUserChannel : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _send = new byte[VhostUserConstants.HeaderSize + VhostUserConstants.MaxPayloadSize];

    public VhostUserChannel(Socket socket) => _socket = socket;

    /// <summary>Connects to a back-end listening on <paramref name="path"/>; one clear line on failure.</summary>
    public static VhostUserChannel Connect(string path)
    {
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new VhostUserException($"no vhost-user socket at '{path}' (the path does not exist)");
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e)
        {
            socket.Dispose();
            var why = e.SocketErrorCode switch
            {
                SocketError.ConnectionRefused => "nothing is listening there",
                SocketError.AccessDenied => "permission denied",
                _ => e.Message,
            };
            throw new VhostUserException($"cannot connect to vhost-user socket '{path}': {why}");
        }
        return new VhostUserChannel(socket);
    }

    /// <summary>The socket's descriptor, for poll sets watching for hang-up.</summary>
    public int Fd => (int)_socket.SafeHandle.DangerousGetHandle();

    public void Send(VhostUserRequest request, VhostUserFlags flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default) =>
        Send((uint)request, flags, payload, fds);

    public void Send(uint request, VhostUserFlags flags, ReadOnlySpan<byte> payload, ReadOnlySpan<int> fds = default)
    {
        if (payload.Length > VhostUserConstants.MaxPayloadSize)
            throw new ArgumentException("payload too large", nameof(payload));
        var message = _send.AsSpan(0, VhostUserConstants.HeaderSize + payload.Length);
        new VhostUserHeader(request, flags | VhostUserFlags.Version1, (uint)payload.Length).Write(message);
        payload.CopyTo(message[VhostUserConstants.HeaderSize..]);
        FdPassing.Send(_socket.SafeHandle, message, fds);
    }

    /// <summary>
    /// Receives one message into <paramref name="payload"/> (at least <see cref="VhostUserConstants.MaxPayloadSize"/> bytes),
    /// waiting at most <paramref name="timeoutMs"/> (-1: forever). Descriptors that came with it are
    /// appended to <paramref name="fds"/>, or closed when it is null.
    /// Throws <see cref="TimeoutException"/>, <see cref="EndOfStreamException"/> (peer closed) or <see cref="VhostUserException"/>.
    /// </summary>
    public VhostUserHeader Receive(Span<byte> payload, out int payloadLength, List<SafeFdHandle>? fds, int timeoutMs)
    {
        var deadline = timeoutMs < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMs;
        Span<byte> raw = stackalloc byte[VhostUserConstants.HeaderSize];
        ReceiveExactly(raw, fds, deadline, timeoutMs);
        var header = VhostUserHeader.Read(raw);
        if (header.Size > VhostUserConstants.MaxPayloadSize || header.Size > payload.Length)
            throw new VhostUserException($"peer sent a {header.Size}-byte payload for message {header.Request}; at most {Math.Min(payload.Length, VhostUserConstants.MaxPayloadSize)} is allowed");
        payloadLength = (int)header.Size;
        ReceiveExactly(payload[..payloadLength], fds, deadline, timeoutMs);
        return header;
    }

    private void ReceiveExactly(Span<byte> buffer, List<SafeFdHandle>? fds, long deadline, int timeoutMs)
    {
        var got = 0;
        while (got < buffer.Length)
        {
            var wait = timeoutMs < 0 ? -1 : (int)Math.Clamp(deadline - Environment.TickCount64, 0, int.MaxValue);
            if (!FdWait.Readable(Fd, wait))
                throw new TimeoutException($"no message within {timeoutMs} ms");
            var n = FdPassing.Receive(_socket.SafeHandle, buffer[got..], fds);
            if (n == 0)
                throw new EndOfStreamException("peer closed the connection");
            got += n;
        }
    }

    /// <summary>Shuts the connection down both ways; the peer sees end-of-file.</summary>
    public void Shutdown()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public void Dispose() => _socket.Dispose();
}
