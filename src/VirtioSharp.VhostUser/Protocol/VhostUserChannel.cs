using VirtioSharp.Native;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>What one attempt to read a message produced.</summary>
public enum ReceiveStatus
{
    Message,
    /// <summary>The peer closed the connection (or reset it).</summary>
    Closed,
    /// <summary>The bytes cannot be framed as a vhost-user message; the stream cannot be trusted further.</summary>
    Malformed,
}

/// <summary>
/// Frames vhost-user messages over a <see cref="UnixFdSocket"/>: header, payload and the
/// descriptors that came with them. Buffers are reused; descriptors received with a message
/// and not taken by the caller are closed when the next message is read.
/// Used by both ends: one reader thread and one writer thread at a time.
/// </summary>
public sealed class VhostUserChannel(UnixFdSocket socket) : IDisposable
{
    private readonly byte[] _header = new byte[VhostUserHeader.Length];
    private readonly byte[] _payload = new byte[VhostUserHeader.MaxPayload];
    private readonly byte[] _send = new byte[VhostUserHeader.Length + VhostUserHeader.MaxPayload];
    private readonly List<SafeFdHandle> _fds = [];
    private readonly Lock _sendLock = new();
    private int _payloadLength;
    private ulong _taken; // bit i: descriptor i was taken by the caller

    public UnixFdSocket Socket { get; } = socket;

    /// <summary>The payload of the last message received.</summary>
    public ReadOnlySpan<byte> Payload => _payload.AsSpan(0, _payloadLength);

    /// <summary>
    /// The errno of the socket call that ended the last <see cref="Receive"/> with <see cref="ReceiveStatus.Closed"/>;
    /// 0 when none did (an orderly close, or a message). EAGAIN means the receive timeout ran out mid-message.
    /// </summary>
    public int LastErrno { get; private set; }

    /// <summary>Number of descriptors that came with the last message.</summary>
    public int FdCount => _fds.Count;

    /// <summary>Takes ownership of descriptor <paramref name="index"/> of the last message.</summary>
    public SafeFdHandle TakeFd(int index)
    {
        var fd = _fds[index];
        if ((_taken & (1UL << index)) != 0)
            throw new InvalidOperationException($"descriptor {index} was already taken");
        _taken |= 1UL << index;
        return fd;
    }

    /// <summary>Reads one whole message. <paramref name="problem"/> says why a message was malformed.</summary>
    public ReceiveStatus Receive(out VhostUserHeader header, out string? problem)
    {
        ReleaseFds();
        header = default;
        problem = null;
        LastErrno = 0;
        _payloadLength = 0;
        try
        {
            if (!Socket.ReceiveExactly(_header, _fds, out var truncated))
                return ReceiveStatus.Closed;
            header = VhostUserHeader.Read(_header);
            if (header.ProtocolVersion != VhostUserHeader.Version)
            {
                problem = $"{header}: protocol version {header.ProtocolVersion}, expected {VhostUserHeader.Version}";
                return ReceiveStatus.Malformed;
            }
            if (header.Size > VhostUserHeader.MaxPayload)
            {
                problem = $"{header}: a payload of {header.Size} bytes is larger than any message ({VhostUserHeader.MaxPayload})";
                return ReceiveStatus.Malformed;
            }
            if (header.Size > 0)
            {
                if (!Socket.ReceiveExactly(_payload.AsSpan(0, (int)header.Size), _fds, out var truncatedPayload))
                {
                    problem = $"{header}: connection closed inside the payload";
                    return ReceiveStatus.Closed;
                }
                truncated |= truncatedPayload;
            }
            _payloadLength = (int)header.Size;
            if (truncated || _fds.Count > UnixFdSocket.MaxReceivedFds)
            {
                problem = $"{header}: more than {UnixFdSocket.MaxReceivedFds} file descriptors attached";
                return ReceiveStatus.Malformed;
            }
            return ReceiveStatus.Message;
        }
        catch (NativeCallException e)
        {
            problem = e.Message;
            LastErrno = e.Errno;
            return ReceiveStatus.Closed;
        }
        catch (ObjectDisposedException)
        {
            return ReceiveStatus.Closed;
        }
    }

    /// <summary>Sends one message (header and payload in one write, descriptors attached). Throws <see cref="IOException"/> if the peer is gone.</summary>
    public void Send(VhostUserHeader header, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFdHandle> fds = default)
    {
        if (payload.Length > VhostUserHeader.MaxPayload)
            throw new ArgumentOutOfRangeException(nameof(payload));
        lock (_sendLock)
        {
            header.Write(_send);
            payload.CopyTo(_send.AsSpan(VhostUserHeader.Length));
            Socket.Send(_send.AsSpan(0, VhostUserHeader.Length + payload.Length), fds);
        }
    }

    /// <summary>Sends a reply carrying one u64 (REPLY_ACK: 0 success, non-zero failure; or a GET_* value).</summary>
    public void SendU64Reply(VhostUserRequest request, ulong value)
    {
        Span<byte> b = stackalloc byte[U64Payload.Length];
        U64Payload.Write(b, value);
        Send(VhostUserHeader.ForReply(request, U64Payload.Length), b);
    }

    private void ReleaseFds()
    {
        for (var i = 0; i < _fds.Count; i++)
        {
            if (i >= 64 || (_taken & (1UL << i)) == 0)
                _fds[i].Dispose();
        }
        _fds.Clear();
        _taken = 0;
    }

    public void Dispose()
    {
        ReleaseFds();
        Socket.Dispose();
    }
}
