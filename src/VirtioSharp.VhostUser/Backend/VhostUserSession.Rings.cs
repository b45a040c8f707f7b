using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>The ring messages (SET_VRING_*, GET_VRING_BASE) and starting a ring's worker over the current table.</summary>
internal sealed partial class VhostUserSession
{
    private Verdict SetVringNum(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (v.Started)
            return Fail($"queue {s.Index}: size change while the ring runs");
        // 2.7: a split ring's size is a power of two; 2.8.10.1: a packed ring's need not be.
        var packed = VringFormat.IsPacked(_features);
        if (s.Num == 0 || s.Num > _device.MaxQueueSize || (!packed && !SplitRing.IsValidSize((int)s.Num)))
            return Fail($"queue {s.Index}: size {s.Num} is not {(packed ? "" : "a power of two ")}in 1..{_device.MaxQueueSize} (the device's queue size)");
        v.Num = s.Num;
        return Verdict.Done;
    }

    private Verdict SetVringAddr(VringAddress a)
    {
        if (!TryRing(a.Index, out var v))
            return Verdict.Failed;
        if ((a.Flags & VringAddress.FlagLog) != 0)
            return Fail($"queue {a.Index}: VHOST_VRING_F_LOG asks for dirty logging, which this back-end does not offer");
        if (a.Flags != 0)
            return Fail($"queue {a.Index}: unknown vring flags 0x{a.Flags:x}");
        // Ring addresses are front-end virtual addresses: translate them through the table's user addresses.
        var size = v.Num == 0 ? 1 : (int)v.Num;
        if (!CoveredByTable(a, size, out var error))
            return Fail($"queue {a.Index}: {error}");
        var wasStarted = v.Started;
        v.Stop();
        v.Address = a;
        if (wasStarted && !TryStart(v, out var restartError))
            return Fail($"queue {a.Index}: {restartError}");
        return Verdict.Done;
    }

    private bool CoveredByTable(VringAddress a, int size, out string error)
    {
        error = "";
        var memory = _memory.Memory;
        if (_memory.IsEmpty)
        {
            error = "ring addresses arrived before any memory table";
            return false;
        }
        var packed = VringFormat.IsPacked(_features);
        var (descBytes, driverBytes, deviceBytes) = VringFormat.PartSizes(packed, size);
        if (!memory.TryTranslateUser(a.Descriptor, descBytes, out _))
            error = $"descriptor {(packed ? "ring" : "table")} at user address 0x{a.Descriptor:x} is not inside any memory region";
        else if (!memory.TryTranslateUser(a.Available, driverBytes, out _))
            error = $"{(packed ? "driver event suppression" : "available ring")} at user address 0x{a.Available:x} is not inside any memory region";
        else if (!memory.TryTranslateUser(a.Used, deviceBytes, out _))
            error = $"{(packed ? "device event suppression" : "used ring")} at user address 0x{a.Used:x} is not inside any memory region";
        return error.Length == 0;
    }

    private Verdict SetVringBase(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (v.Started)
            return Fail($"queue {s.Index}: base change while the ring runs");
        if (!VringFormat.BaseFits(VringFormat.IsPacked(_features), s.Num))
            return Fail($"queue {s.Index}: base {s.Num} does not fit a 16-bit split-ring index");
        v.Base = s.Num;
        return Verdict.Done;
    }

    private Verdict GetVringBase(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        var wasStarted = v.Started;
        v.Stop();
        // The ring needs a new kick descriptor to start again.
        v.SetKick(null);
        if (wasStarted)
            _log.Info($"queue {s.Index}: stopped at {VringFormat.Describe(VringFormat.IsPacked(_features), v.Base)} ({v.Kicks} kicks, {v.Calls} calls so far)");
        Span<byte> reply = stackalloc byte[VringState.Length];
        new VringState(s.Index, v.Base).Write(reply);
        _channel.Send(VhostUserHeader.ForReply(VhostUserRequest.GetVringBase, VringState.Length), reply);
        return Verdict.Done;
    }

    private Verdict SetVringFd(VhostUserRequest request, ulong value)
    {
        var index = (uint)(value & U64Payload.VringIndexMask);
        var noFd = (value & U64Payload.InvalidFdFlag) != 0;
        if (!TryRing(index, out var v))
            return Verdict.Failed;
        if (noFd && _channel.FdCount != 0)
            return Fail($"queue {index}: the no-descriptor flag is set but {_channel.FdCount} descriptor(s) came");
        if (!noFd && _channel.FdCount != 1)
            return Fail($"queue {index}: expected one eventfd, {_channel.FdCount} came");
        EventFd? fd = null;
        if (!noFd)
        {
            var handle = _channel.TakeFd(0);
            // vhost-user.rst: kick, call and err are eventfds. Anything else may poll readable for
            // ever (a file, /dev/zero, a closed socket) and spin the ring worker, or take our writes.
            if (!EventFd.IsEventFd(handle))
            {
                handle.Dispose();
                return Fail($"queue {index}: the descriptor for {request.SpecName()} is not an eventfd");
            }
            fd = EventFd.Adopt(handle);
        }
        switch (request)
        {
            case VhostUserRequest.SetVringCall:
                v.SetCall(fd);
                return Verdict.Done;
            case VhostUserRequest.SetVringErr:
                v.SetErr(fd);
                return Verdict.Done;
        }
        if (fd is null)
            return Fail($"queue {index}: polling the ring without a kick descriptor is not supported");
        var wasStarted = v.Started;
        v.Stop();
        v.SetKick(fd);
        // vhost-user.rst, "Ring states": the ring starts once it has a kick descriptor.
        if (!TryStart(v, out var error))
            return Fail($"queue {index}: kick received but the ring cannot start: {error}");
        if (!wasStarted)
            _log.Info($"queue {index}: started: {(VringFormat.IsPacked(_features) ? "packed" : "split")} ring, size {v.Num}, {VringFormat.Describe(VringFormat.IsPacked(_features), v.Base)}, {(v.Enabled ? "enabled" : "disabled until VHOST_USER_SET_VRING_ENABLE")}");
        return Verdict.Done;
    }

    private Verdict SetVringEnable(VringState s)
    {
        if (!TryRing(s.Index, out var v))
            return Verdict.Failed;
        if (s.Num > 1)
            return Fail($"queue {s.Index}: enable value {s.Num} is neither 0 nor 1");
        if (!VirtioFeatures.Has(_features, VhostUserFeatures.ProtocolFeaturesBit))
            _log.Debug($"queue {s.Index}: VHOST_USER_SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated");
        v.SetEnabled(s.Num == 1);
        _log.Debug($"queue {s.Index}: {(s.Num == 1 ? "enabled" : "disabled")}");
        return Verdict.Done;
    }

    /// <summary>Builds the queue over the current table and starts the worker.</summary>
    private bool TryStart(Vring v, out string error)
    {
        error = "";
        if (v.Kick is null)
            error = "no kick descriptor";
        else if (_memory.IsEmpty)
            error = "no memory table yet (VHOST_USER_SET_MEM_TABLE or VHOST_USER_ADD_MEM_REG first)";
        else if (v.Num == 0)
            error = "no size yet (VHOST_USER_SET_VRING_NUM first)";
        else if (v.Address is not { } a)
            error = "no ring addresses yet (VHOST_USER_SET_VRING_ADDR first)";
        else if (!CoveredByTable(a, (int)v.Num, out var coverage))
            error = coverage;
        else
        {
            var memory = _memory.Memory;
            var packed = VringFormat.IsPacked(_features);
            var eventIdx = VirtioFeatures.Has(_features, VirtioFeatures.RingEventIdx);
            var indirect = VirtioFeatures.Has(_features, VirtioFeatures.RingIndirectDesc);
            // The layout is checked before anything of the ring is read; a split ring's used index
            // is then the one in memory (vhost-user.rst, SET_VRING_BASE).
            var startIndex = v.Base;
            var found = VringFormat.Create(packed, v.Index, (int)v.Num, memory, a, eventIdx, indirect, startIndex, out var usedIdx, out var queueError);
            SplitInflightRecord.Plan plan = default;
            var record = packed || found is null ? null : _inflight?.Queue(v.Index);
            if (record is { } r)
            {
                if (r.TryReconcile(usedIdx, (ushort)v.Num, out plan, out var recordError))
                {
                    // The record knows how far the available ring was read: used idx + requests in flight.
                    if (!plan.Fresh && plan.LastAvail != (ushort)startIndex)
                    {
                        startIndex = plan.LastAvail;
                        found = VringFormat.Create(packed, v.Index, (int)v.Num, memory, a, eventIdx, indirect, startIndex, out usedIdx, out queueError);
                    }
                    if (plan.Resubmit.Length > 0 || plan.BatchRepaired > 0)
                        _log.Info($"queue {v.Index}: inflight record: {plan.Resubmit.Length} request{(plan.Resubmit.Length == 1 ? "" : "s")} in flight when the last back-end stopped"
                            + (plan.BatchRepaired > 0 ? $", {plan.BatchRepaired} already used (last batch repaired)" : "")
                            + $"; resubmitting them in the order taken, then resuming at avail index {startIndex}");
                }
                else
                {
                    _inflight!.Reject(v.Index);
                    record = null;
                    _log.Error($"queue {v.Index}: inflight record ignored, nothing replayed: {recordError}");
                }
            }
            if (found is null)
                error = queueError ?? "the ring cannot be laid out";
            else
            {
                found.SignalNextBatch(); // as Linux's vhost does for the first used batch after a ring starts
                if (_device.Trace is { } trace && found is SplitDeviceQueue traced)
                    traced.Record(trace, GuestAddress(memory, a.Descriptor), GuestAddress(memory, a.Available), GuestAddress(memory, a.Used), indirect);
                if (found is PackedDeviceQueue p)
                    p.Breaches = _device.Breaches;
                if (record is null && !packed && usedIdx != (ushort)v.Base)
                    _log.Warn($"queue {v.Index}: used index {usedIdx} differs from the available base {v.Base}; requests between them were taken before and are not replayed");
                else if (record is not null && startIndex != v.Base)
                    _log.Info($"queue {v.Index}: the front-end said avail index {v.Base}; the inflight record says {startIndex}");
                IDeviceQueue queue = record is { } tracked && found is SplitDeviceQueue split ? new InflightTrackingQueue(split, tracked, plan, usedIdx) : found;
                if (_holdCompletionsMs > 0)
                    queue = new HeldCompletionsQueue(queue, _holdCompletionsMs, v.Wake);
                v.Base = startIndex;
                v.Start(queue);
                _startedSinceFeatures = true;
                _log.Debug($"queue {v.Index}: worker running: desc 0x{a.Descriptor:x} avail 0x{a.Available:x} used 0x{a.Used:x}, avail {startIndex}, used {usedIdx}");
                return true;
            }
        }
        return false;
    }

    /// <summary>A ring's guest-physical address, for recordings (the front-end gives its own virtual ones).</summary>
    private static ulong GuestAddress(Memory.GuestMemory memory, ulong user) => memory.TryUserToGuest(user, 1, out var gpa) ? gpa : user;
}
