using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>Inflight I/O tracking (vhost-user.rst, "Inflight I/O tracking"): GET_INFLIGHT_FD and SET_INFLIGHT_FD.</summary>
internal sealed partial class VhostUserSession
{
    private bool InflightPayload(ReadOnlySpan<byte> p, out InflightDescription d)
    {
        d = default;
        if (p.Length is not (InflightDescription.Length or InflightDescription.FieldsLength))
        {
            _why = $"payload is {p.Length} bytes, expected {InflightDescription.Length}";
            return false;
        }
        d = InflightDescription.Read(p);
        return true;
    }

    /// <summary>GET_INFLIGHT_FD: a new zeroed area for the queues the front-end names; it keeps the descriptor for our successor.</summary>
    private Verdict GetInflightFd(ReadOnlySpan<byte> p)
    {
        if (!InflightPayload(p, out var d))
            return Verdict.Failed;
        if (InflightRegion.CheckShape(d.NumQueues, d.QueueSize, _vrings.Length) is { } shape)
            return Fail($"cannot track {shape}");
        if (_vrings.Any(v => v.Started))
            return Fail("the inflight area cannot change while rings run");
        var region = InflightRegion.Create(d.NumQueues, d.QueueSize);
        SwapInflight(region);
        Span<byte> reply = stackalloc byte[InflightDescription.Length];
        region.Description.Write(reply);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetInflightFd, InflightDescription.Length), reply, [region.Fd]);
        _log.Info($"inflight area made: {region.Size} bytes for {d.NumQueues} queue{(d.NumQueues == 1 ? "" : "s")} of {d.QueueSize}");
        return Verdict.Done;
    }

    /// <summary>
    /// SET_INFLIGHT_FD: the area to keep the record in, maybe written by a back-end before us. One
    /// that cannot hold what it claims is refused with a log line and the session carries on
    /// without it (nothing replayed); failing the message would stop QEMU from starting the device.
    /// </summary>
    private Verdict SetInflightFd(ReadOnlySpan<byte> p)
    {
        if (_channel.FdCount != 1)
            return Fail($"expected one descriptor, {_channel.FdCount} came");
        if (!InflightPayload(p, out var d))
            return Verdict.Failed;
        if (_vrings.Any(v => v.Started))
            return Fail("the inflight area cannot change while rings run");
        var fd = _channel.TakeFd(0);
        InflightRegion? region;
        string? error;
        try
        {
            region = InflightRegion.Adopt(fd, d, _vrings.Length, out error);
        }
        catch (NativeCallException e)
        {
            region = null;
            error = e.Message;
        }
        if (region is null)
        {
            fd.Dispose();
            SwapInflight(null);
            _log.Error($"inflight area refused, requests will not be replayed: {error}");
            return Verdict.Done;
        }
        SwapInflight(region);
        _log.Info($"inflight area set: {region.Size} bytes at offset {region.Offset} for {d.NumQueues} queue{(d.NumQueues == 1 ? "" : "s")} of {d.QueueSize}");
        return Verdict.Done;
    }

    private void SwapInflight(InflightRegion? region)
    {
        var old = _inflight;
        _inflight = region;
        if (old != null && old != region)
            old.Dispose();
    }
}
