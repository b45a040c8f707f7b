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
    /// <summary>The stop descriptor given to <see cref="VhostUserChannel.BoundReceives"/> was signalled mid-message.</summary>
    Stopped,
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
    private SafeFdHandle? _stop;
    private int _messageTimeoutMs = -1;

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

    /// <summary>
    /// Bounds every later <see cref="Receive"/>: once a message has begun, the rest of it must come
    /// within <paramref name="messageTimeout"/> (else the message is malformed: a peer that sends
    /// half a message and stops), and a signal on <paramref name="stop"/> ends the wait at once
    /// (<see cref="ReceiveStatus.Stopped"/>). The caller keeps <paramref name="stop"/> open.
    /// </summary>
    public void BoundReceives(SafeFdHandle stop, TimeSpan messageTimeout)
    {
        _stop = stop;
        _messageTimeoutMs = (int)Math.Clamp(messageTimeout.TotalMilliseconds, 1, int.MaxValue);
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
            var deadline = Environment.TickCount64 + _messageTimeoutMs;
            var got = Fill(_header, deadline, out var truncated);
            if (got != ReceiveStatus.Message)
            {
                if (got == ReceiveStatus.Malformed)
                    problem = $"the peer sent part of a message header and nothing more for {_messageTimeoutMs / 1000.0:0.###} s";
                return got;
            }
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
                got = Fill(_payload.AsSpan(0, (int)header.Size), deadline, out var truncatedPayload);
                if (got == ReceiveStatus.Closed)
                    problem = $"{header}: connection closed inside the payload";
                else if (got == ReceiveStatus.Malformed)
                    problem = $"{header}: the peer sent part of the {header.Size}-byte payload and nothing more for {_messageTimeoutMs / 1000.0:0.###} s";
                if (got != ReceiveStatus.Message)
                    return got;
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

    /// <summary>
    /// Fills <paramref name="buffer"/>. Unbounded, a plain blocking read. Bounded, every wait for more
    /// bytes is a poll on the socket and the stop descriptor that ends by <paramref name="deadline"/>;
    /// the first bytes of a message are awaited only as long, since the caller polls before it reads.
    /// </summary>
    private ReceiveStatus Fill(Span<byte> buffer, long deadline, out bool fdsTruncated)
    {
        if (_stop is null)
            return Socket.ReceiveExactly(buffer, _fds, out fdsTruncated) ? ReceiveStatus.Message : ReceiveStatus.Closed;
        fdsTruncated = false;
        var done = 0;
        Span<PollFd> fds = stackalloc PollFd[2];
        while (done < buffer.Length)
        {
            var left = deadline - Environment.TickCount64;
            if (left <= 0)
                return ReceiveStatus.Malformed;
            fds[0] = new PollFd(Socket.Fd);
            fds[1] = new PollFd(_stop.Fd);
            FdPoll.Wait(fds, (int)Math.Min(left, int.MaxValue));
            if (fds[1].Ready)
                return ReceiveStatus.Stopped;
            if (!fds[0].Ready)
                continue; // timed out: the loop head says so
            var n = Socket.Receive(buffer[done..], _fds, out var truncated);
            fdsTruncated |= truncated;
            if (n == 0)
                return ReceiveStatus.Closed;
            done += n;
        }
        return ReceiveStatus.Message;
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
