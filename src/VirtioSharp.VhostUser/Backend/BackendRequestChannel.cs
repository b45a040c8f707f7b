using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>What became of one request on the back-end's channel.</summary>
public enum BackendRequestOutcome
{
    /// <summary>Sent; no reply was asked for (REPLY_ACK not negotiated).</summary>
    Sent,
    /// <summary>The front-end replied 0: done.</summary>
    Acknowledged,
    /// <summary>The front-end replied with a non-zero value: it could not do it.</summary>
    Refused,
    /// <summary>No reply within the timeout; the channel is no longer trusted.</summary>
    NoReply,
    /// <summary>The channel is gone or the front-end answered something else; it is no longer used.</summary>
    Broken,
}

/// <summary>
/// The back-end's own channel to the front-end (vhost-user.rst, "Back-end communication"): one end
/// of a socket pair the front-end passed with VHOST_USER_SET_BACKEND_REQ_FD. The back-end sends
/// requests on it, and with need_reply waits, bounded, for the front-end's u64 answer. Thread-safe:
/// one request at a time. After a broken exchange it stays closed (a late reply would be taken
/// for the answer to the next request).
/// </summary>
public sealed class BackendRequestChannel : IDisposable
{
    private readonly VhostUserChannel _channel;
    private readonly EventFd _stop = EventFd.Create();
    private readonly TimeSpan _timeout;
    private readonly Lock _lock = new();
    private bool _broken;
    private bool _disposed;
    private int _disposing;

    public BackendRequestChannel(UnixFdSocket socket, TimeSpan timeout)
    {
        _timeout = timeout;
        _channel = new VhostUserChannel(socket);
        // A front-end that stops reading must not hold the sending thread either.
        socket.SetTimeouts(timeout);
        _channel.BoundReceives(_stop.Handle, timeout);
    }

    /// <summary>False once an exchange broke or the channel was disposed.</summary>
    public bool Usable
    {
        get { lock (_lock) return !_broken && !_disposed; }
    }

    /// <summary>
    /// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG (no payload): the device's configuration space changed
    /// and the front-end should read it again with VHOST_USER_GET_CONFIG. With
    /// <paramref name="needReply"/> (REPLY_ACK negotiated), waits for the answer at most the timeout.
    /// <paramref name="detail"/> says what went wrong, for the log.
    /// </summary>
    public BackendRequestOutcome NotifyConfigChange(bool needReply, out string detail) =>
        Request(VhostUserBackendRequest.ConfigChangeMsg, needReply, out detail);

    private BackendRequestOutcome Request(VhostUserBackendRequest request, bool needReply, out string detail)
    {
        detail = "";
        lock (_lock)
        {
            if (_disposed || _broken)
            {
                detail = "the channel is closed";
                return BackendRequestOutcome.Broken;
            }
            try
            {
                _channel.Send(VhostUserHeader.ForBackendRequest(request, 0, needReply), default);
                if (!needReply)
                    return BackendRequestOutcome.Sent;
                var outcome = AwaitReply(request, out detail);
                _broken = outcome is BackendRequestOutcome.NoReply or BackendRequestOutcome.Broken;
                return outcome;
            }
            catch (Exception e) when (e is IOException or NativeCallException or ObjectDisposedException)
            {
                _broken = true;
                detail = e.Message;
                return BackendRequestOutcome.Broken;
            }
        }
    }

    private BackendRequestOutcome AwaitReply(VhostUserBackendRequest request, out string detail)
    {
        detail = "";
        var ms = (int)Math.Clamp(_timeout.TotalMilliseconds, 1, int.MaxValue);
        Span<PollFd> fds = stackalloc PollFd[2];
        fds[0] = new PollFd(_channel.Socket.Fd);
        fds[1] = new PollFd(_stop.Fd);
        FdPoll.Wait(fds, ms);
        if (fds[1].Ready)
        {
            detail = "the connection is closing";
            return BackendRequestOutcome.Broken;
        }
        if (!fds[0].Ready)
        {
            detail = $"no reply within {_timeout.TotalSeconds:0.###} s";
            return BackendRequestOutcome.NoReply;
        }
        switch (_channel.Receive(out var header, out var problem))
        {
            case ReceiveStatus.Message:
                break;
            case ReceiveStatus.Closed:
                detail = problem ?? "the front-end closed the channel";
                return BackendRequestOutcome.Broken;
            default:
                detail = problem ?? "malformed reply";
                return BackendRequestOutcome.Broken;
        }
        // vhost-user.rst, REPLY_ACK: the reply carries the request's type, the reply flag and one u64.
        if (!header.IsReply || header.BackendRequest != request || _channel.Payload.Length != U64Payload.Length)
        {
            detail = $"expected a {U64Payload.Length}-byte reply to {request.SpecName()}, got type {(uint)header.Request} flags 0x{header.Flags:x} size {header.Size}";
            return BackendRequestOutcome.Broken;
        }
        var value = U64Payload.Read(_channel.Payload);
        if (value == 0)
            return BackendRequestOutcome.Acknowledged;
        detail = $"the front-end answered {value}";
        return BackendRequestOutcome.Refused;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
            return;
        _stop.Signal(); // ends a wait for a reply at once
        lock (_lock)
        {
            _disposed = true;
            _channel.Dispose();
        }
        _stop.Dispose();
    }
}
