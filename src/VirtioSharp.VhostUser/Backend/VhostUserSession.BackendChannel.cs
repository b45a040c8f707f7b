using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// The back-end's own channel (vhost-user.rst, "Back-end communication": SET_BACKEND_REQ_FD) and
/// the configuration changes sent on it.
/// </summary>
internal sealed partial class VhostUserSession
{
    /// <summary>SET_BACKEND_REQ_FD: one end of a stream socket pair, for the back-end's own requests.</summary>
    private Verdict SetBackendReqFd()
    {
        if (!VhostUserFeatures.Has(_protocolFeatures, VhostUserFeatures.BackendReq))
            return Fail("VHOST_USER_PROTOCOL_F_BACKEND_REQ was not negotiated");
        if (_channel.FdCount != 1)
            return Fail($"expected one socket, {_channel.FdCount} descriptor(s) came");
        var fd = _channel.TakeFd(0);
        UnixFdSocket socket;
        try
        {
            socket = UnixFdSocket.AdoptConnected(fd);
        }
        catch (IOException e)
        {
            fd.Dispose();
            return Fail(e.Message);
        }
        SwapBackendChannel(new BackendRequestChannel(socket, _messageTimeout));
        _log.Debug("back-end request channel set: configuration changes will be sent to the front-end");
        return Verdict.Done;
    }

    private void SwapBackendChannel(BackendRequestChannel? channel)
    {
        BackendRequestChannel? old;
        lock (_backendLock)
        {
            old = _backendChannel;
            _backendChannel = channel;
        }
        old?.Dispose();
    }

    /// <summary>
    /// The device changed its configuration space (a disk resized), on the thread that noticed it,
    /// never this session's message thread: QEMU answers a config-change message only after it has
    /// read the new config with GET_CONFIG, which that thread serves. The front-end is told with
    /// VHOST_USER_BACKEND_CONFIG_CHANGE_MSG when it agreed to CONFIG and BACKEND_REQ and gave a
    /// channel; otherwise the log says the guest was not told.
    /// </summary>
    private void OnConfigChanged()
    {
        var protocol = Volatile.Read(ref _protocolFeatures);
        BackendRequestChannel? channel;
        lock (_backendLock)
            channel = _backendChannel;
        string? missing = null;
        if (!VhostUserFeatures.Has(protocol, VhostUserFeatures.Config))
            missing = "VHOST_USER_PROTOCOL_F_CONFIG was not negotiated";
        else if (!VhostUserFeatures.Has(protocol, VhostUserFeatures.BackendReq))
            missing = "the front-end did not negotiate VHOST_USER_PROTOCOL_F_BACKEND_REQ";
        else if (channel is null)
            missing = "the front-end sent no VHOST_USER_SET_BACKEND_REQ_FD";
        if (missing is not null)
        {
            _log.Warn($"the configuration changed but the guest was not told: {missing}; it sees the new capacity only when its driver reads the configuration again (after a reset or reconnect)");
            return;
        }
        var needReply = VhostUserFeatures.Has(protocol, VhostUserFeatures.ReplyAck);
        var outcome = channel!.NotifyConfigChange(needReply, out var detail);
        switch (outcome)
        {
            case BackendRequestOutcome.Acknowledged:
                _log.Info("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), acknowledged");
                break;
            case BackendRequestOutcome.Sent:
                _log.Info("configuration change sent to the front-end (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, no reply asked: REPLY_ACK not negotiated)");
                break;
            case BackendRequestOutcome.Refused:
                _log.Warn($"configuration change sent to the front-end, which refused it: {detail}");
                break;
            default:
                _log.Warn($"configuration change not delivered: {detail}; the back-end request channel is closed");
                lock (_backendLock)
                {
                    if (_backendChannel == channel)
                        _backendChannel = null;
                }
                channel.Dispose();
                break;
        }
    }
}
