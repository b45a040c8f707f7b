using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>The control connection: the handshake, requests and their replies, and what a failed one means.</summary>
public sealed unsafe partial class VhostUserFrontendTransport
{
    // ---------------------------------------------------------------- connection setup

    private void Handshake()
    {
        try
        {
            BackendFeatures = RequestU64(VhostUserRequest.GetFeatures);
        }
        catch (VhostUserException) when (_peerClosed)
        {
            throw new BusyException($"vhost-user back-end at '{SocketPath}' closed every connection before answering (is another front-end connected?)");
        }
        if (ProtocolFeaturesNegotiated)
        {
            BackendProtocolFeatures = RequestU64(VhostUserRequest.GetProtocolFeatures);
            ProtocolFeatures = BackendProtocolFeatures & _options.ProtocolFeatures;
            SendU64(VhostUserRequest.SetProtocolFeatures, ProtocolFeatures, ack: false); // REPLY_ACK starts after this
            if (HasProtocolFeature(VhostUserFeatures.Mq))
            {
                var queues = RequestU64(VhostUserRequest.GetQueueNum);
                if (queues == 0 || queues > 256)
                    throw Lose($"back-end reports {queues} queues (GET_QUEUE_NUM); expected 1..256");
                BackendQueueCount = (int)queues;
            }
        }
        Send(VhostUserRequest.SetOwner, [], ack: true);
        _options.Log.Debug($"vhost-user: connected to {SocketPath}: features 0x{BackendFeatures:x}, protocol features {VhostUserFeatures.DescribeProtocol(ProtocolFeatures)}");
    }

    // ---------------------------------------------------------------- messages

    private void SendU64(VhostUserRequest request, ulong value, bool ack)
    {
        Span<byte> payload = stackalloc byte[8];
        U64Payload.Write(payload, value);
        Send(request, payload, ack);
    }

    /// <summary>Sends a request; with REPLY_ACK negotiated and <paramref name="ack"/>, waits for the back-end's verdict.</summary>
    private void Send(VhostUserRequest request, ReadOnlySpan<byte> payload, bool ack, ReadOnlySpan<SafeFdHandle> fds = default)
    {
        var needReply = ack && HasProtocolFeature(VhostUserFeatures.ReplyAck);
        lock (_control)
        {
            Transmit(request, payload, fds, needReply);
            if (!needReply)
                return;
            var reply = ReceiveReply(request);
            if (reply.Length != U64Payload.Length)
                throw Lose($"back-end acknowledged {Name(request)} with a {reply.Length}-byte payload; expected {U64Payload.Length}");
            var verdict = U64Payload.Read(reply);
            if (verdict != 0)
                throw new VhostUserException($"back-end refused {Name(request)} (reply {verdict})");
        }
    }

    private ulong RequestU64(VhostUserRequest request)
    {
        lock (_control)
        {
            var reply = Request(request, []);
            if (reply.Length != U64Payload.Length)
                throw Lose($"back-end answered {Name(request)} with a {reply.Length}-byte payload; expected {U64Payload.Length}");
            return U64Payload.Read(reply);
        }
    }

    /// <summary>
    /// Sends a request that always has a reply and returns the reply payload. The span is valid until
    /// the next message, so callers hold <see cref="_control"/> while they read it.
    /// </summary>
    private ReadOnlySpan<byte> Request(VhostUserRequest request, ReadOnlySpan<byte> payload)
    {
        lock (_control)
        {
            Transmit(request, payload, default, needReply: false);
            return ReceiveReply(request);
        }
    }

    private void Transmit(VhostUserRequest request, ReadOnlySpan<byte> payload, ReadOnlySpan<SafeFdHandle> fds, bool needReply)
    {
        ThrowIfUnusable();
        try
        {
            _channel.Send(VhostUserHeader.ForRequest(request, payload.Length, needReply), payload, fds);
        }
        catch (IOException e)
        {
            _peerClosed = true;
            throw Lose($"vhost-user back-end closed the connection (sending {Name(request)}: {e.Message})");
        }
    }

    /// <summary>Waits (bounded) for the reply to <paramref name="request"/>; any failure loses the connection.</summary>
    private ReadOnlySpan<byte> ReceiveReply(VhostUserRequest request)
    {
        bool ready;
        try
        {
            ready = FdPoll.WaitReadable(_channel.Socket.Handle, ReplyTimeoutMs);
        }
        catch (Exception e) when (e is NativeCallException or ObjectDisposedException)
        {
            throw Lose($"vhost-user connection failed waiting for the reply to {Name(request)}: {e.Message}");
        }
        if (!ready)
            throw Lose($"vhost-user back-end did not answer {Name(request)} within {_options.ReplyTimeout.TotalSeconds:0.###} s");
        switch (_channel.Receive(out var header, out var problem))
        {
            case ReceiveStatus.Closed when problem is not null:
                // EAGAIN here is our receive timeout in the middle of a message; anything else (a reset) is a hang-up.
                _peerClosed = _channel.LastErrno != Errno.EAGAIN;
                throw Lose($"vhost-user connection failed reading the reply to {Name(request)}: {problem}");
            case ReceiveStatus.Closed:
                _peerClosed = true;
                throw Lose($"vhost-user back-end closed the connection (waiting for the reply to {Name(request)})");
            case ReceiveStatus.Malformed:
                throw Lose($"vhost-user back-end sent a malformed reply to {Name(request)}: {problem}");
        }
        if (header.Request != request || !header.IsReply)
            throw Lose($"back-end answered {Name(request)} with {header}");
        return _channel.Payload;
    }

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_lost is { } reason)
            throw new VhostUserException(reason);
    }

    private static string Name(VhostUserRequest request) => request.SpecName();

    private ulong ToUser(ulong guestPhysical, ulong length)
    {
        foreach (ref readonly var r in Memory.Regions)
        {
            if (r.Contains(guestPhysical, length))
                return r.UserAddress + (guestPhysical - r.GuestPhysicalAddress);
        }
        throw new ArgumentOutOfRangeException(nameof(guestPhysical), $"ring at 0x{guestPhysical:x} is outside the shared memory");
    }
}
