using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Driver;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Frontend;

/// <summary>What the virtio status steps mean on vhost-user: features and memory at FEATURES_OK, ring messages, enabling and stopping the rings.</summary>
public sealed unsafe partial class VhostUserFrontendTransport
{
    // ---------------------------------------------------------------- status side effects

    /// <summary>FEATURES_OK: SET_FEATURES (plus bit 30 when offered) and the memory table. False if the back-end refused.</summary>
    private bool AcceptFeatures()
    {
        var offered = GetDeviceFeatures();
        if ((_driverFeatures & ~offered) != 0)
        {
            _options.Log.Warn($"vhost-user: driver asked for features 0x{_driverFeatures & ~offered:x} the back-end does not offer");
            return false;
        }
        var features = _driverFeatures | (BackendFeatures & VhostUserFeatures.ProtocolFeatures);
        try
        {
            SendU64(VhostUserRequest.SetFeatures, features, ack: true);
            if (!HasProtocolFeature(VhostUserFeatures.ReplyAck))
                RequestU64(VhostUserRequest.GetFeatures); // without REPLY_ACK, a request with a reply shows the back-end is still there
        }
        catch (VhostUserException e)
        {
            _options.Log.Warn($"vhost-user: SET_FEATURES failed: {e.Message}");
            return false;
        }
        SendMemoryTable();
        return true;
    }

    private void SendMemoryTable()
    {
        Span<byte> payload = stackalloc byte[MemoryTablePayload.LengthFor(1)];
        MemoryTablePayload.Write(payload, [new MemoryRegionDescription(0, MemorySize, (ulong)_mapping.Address, 0)]);
        Send(VhostUserRequest.SetMemTable, payload, ack: true, fds: [_memfd]);
    }

    /// <summary>
    /// Hands one ring to the back-end: size, base 0, addresses, then the call eventfd (so the ring
    /// never runs without a way to signal us) and the kick, which starts it (vhost-user.rst, "Ring states").
    /// </summary>
    private void SendRing(FrontendQueue q)
    {
        Span<byte> payload = stackalloc byte[VringAddress.Length];
        new VringState((uint)q.Index, (uint)q.Size).Write(payload);
        Send(VhostUserRequest.SetVringNum, payload[..VringState.Length], ack: true);
        // A packed ring starts at index 0 with both wrap counters 1 (2.8.1; the avail wrap in bit 15).
        new VringState((uint)q.Index, q.Packed ? Backend.VringFormat.PackedInitialBase : 0).Write(payload);
        Send(VhostUserRequest.SetVringBase, payload[..VringState.Length], ack: true);
        new VringAddress((uint)q.Index, 0, q.DescriptorUser, q.UsedUser, q.AvailUser, 0).Write(payload);
        Send(VhostUserRequest.SetVringAddr, payload, ack: true);
        Span<byte> u64 = stackalloc byte[8];
        U64Payload.Write(u64, (ulong)q.Index);
        Send(VhostUserRequest.SetVringCall, u64, ack: true, fds: [q.Call.Handle]);
        Send(VhostUserRequest.SetVringKick, u64, ack: true, fds: [q.Kick.Handle]);
    }

    /// <summary>DRIVER_OK: with protocol features the rings start disabled, so enable each one set up.</summary>
    private void EnableRings()
    {
        Span<byte> payload = stackalloc byte[VringState.Length];
        foreach (var q in _queues)
        {
            if (q is null || q.Enabled)
                continue;
            if (ProtocolFeaturesNegotiated)
            {
                new VringState((uint)q.Index, 1).Write(payload);
                Send(VhostUserRequest.SetVringEnable, payload, ack: true);
            }
            q.Enabled = true;
        }
    }

    /// <summary>
    /// Waits (bounded) until every request made available has been used and handed to the driver,
    /// then stops each ring with GET_VRING_BASE and ends its call thread.
    /// </summary>
    private void StopRings()
    {
        var any = false;
        foreach (var q in _queues)
            any |= q is not null;
        if (!any)
            return;
        Drain();
        Span<byte> payload = stackalloc byte[VringState.Length];
        foreach (var q in _queues)
        {
            if (q is null)
                continue;
            if (_lost is null)
            {
                try
                {
                    new VringState((uint)q.Index, 0).Write(payload);
                    var reply = Request(VhostUserRequest.GetVringBase, payload);
                    if (reply.Length >= VringState.Length)
                        _options.Log.Debug($"vhost-user: queue {q.Index} stopped at available index {VringState.Read(reply).Num}");
                }
                catch (VhostUserException)
                {
                    // Lose() has recorded why; the remaining rings are gone with the connection.
                }
            }
            _queues[q.Index] = null;
            q.Dispose();
        }
    }

    private void Drain()
    {
        var deadline = Environment.TickCount64 + (long)_options.DrainTimeout.TotalMilliseconds;
        while (_lost is null)
        {
            var inFlight = 0;
            foreach (var q in _queues)
                inFlight += q?.InFlight ?? 0;
            if (inFlight == 0)
                break;
            if (Environment.TickCount64 >= deadline)
            {
                _options.Log.Warn($"vhost-user: {inFlight} requests still in flight after {_options.DrainTimeout.TotalSeconds:0.#} s; stopping anyway");
                break;
            }
            Thread.Sleep(1);
        }
        // Hand the driver whatever was used but not yet reaped, before the call threads end.
        if (_handler is { } handler)
        {
            foreach (var q in _queues)
            {
                if (q is not null)
                    handler.OnUsedBuffers(q.Index);
            }
        }
    }
}
