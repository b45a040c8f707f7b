using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>The memory table (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG): mapping regions and moving running rings onto a new table.</summary>
internal sealed partial class VhostUserSession
{
    private Verdict SetMemTable(ReadOnlySpan<byte> p)
    {
        if (p.Length < MemoryTablePayload.HeaderLength)
            return Fail($"payload is {p.Length} bytes, shorter than the {MemoryTablePayload.HeaderLength}-byte table header");
        var count = MemoryTablePayload.Count(p);
        if (count > MemoryTablePayload.MaxRegions)
            return Fail($"{count} regions; at most {MemoryTablePayload.MaxRegions} fit in one table");
        // Exactly the regions listed; some front-ends send the whole 8-slot array.
        if (p.Length != MemoryTablePayload.LengthFor((int)count) && p.Length != MemoryTablePayload.LengthFor(MemoryTablePayload.MaxRegions))
            return Fail($"payload is {p.Length} bytes; {count} regions take {MemoryTablePayload.LengthFor((int)count)}");
        if (_channel.FdCount != count)
            return Fail($"{count} regions came with {_channel.FdCount} file descriptor(s); each region needs exactly one");

        var descriptions = new List<MemoryRegionDescription>((int)count);
        for (var i = 0; i < count; i++)
        {
            var r = MemoryTablePayload.Region(p, i);
            if (MemoryTable.CheckShape(r) is { } shape)
                return Fail(shape);
            descriptions.Add(r);
        }
        if (MemoryTable.CheckOverlaps(descriptions) is { } overlap)
            return Fail(overlap);

        var mapped = new List<MappedRegion>(descriptions.Count);
        for (var i = 0; i < descriptions.Count; i++)
        {
            using var fd = _channel.TakeFd(i);
            var region = MemoryTable.Map(descriptions[i], fd, out var error);
            if (region is null)
            {
                foreach (var m in mapped)
                    m.Dispose();
                return Fail(error!);
            }
            mapped.Add(region);
        }
        SwapMemory(mapped, $"memory table set: {mapped.Count} region{(mapped.Count == 1 ? "" : "s")}");
        return Verdict.Done;
    }

    private Verdict AddMemReg(MemoryRegionDescription r)
    {
        if (_channel.FdCount != 1)
            return Fail($"a region needs exactly one file descriptor, {_channel.FdCount} came");
        if (_memory.Regions.Count >= MemoryTable.MaxSlots)
            return Fail($"all {MemoryTable.MaxSlots} memory slots are in use");
        if (MemoryTable.CheckShape(r) is { } shape)
            return Fail(shape);
        var all = _memory.Regions.Select(m => m.Description).Append(r).ToList();
        if (MemoryTable.CheckOverlaps(all) is { } overlap)
            return Fail(overlap);
        using var fd = _channel.TakeFd(0);
        var region = MemoryTable.Map(r, fd, out var error);
        if (region is null)
            return Fail(error!);
        SwapMemory([.. _memory.Regions, region], $"memory region added: {r}", logRegions: false);
        return Verdict.Done;
    }

    private Verdict RemMemReg(MemoryRegionDescription r)
    {
        // vhost-user.rst: no descriptor SHOULD come; one MAY, and is closed unused (the channel closes it).
        if (_channel.FdCount > 1)
            return Fail($"{_channel.FdCount} file descriptors attached; at most one is tolerated");
        var victim = _memory.Regions.FirstOrDefault(m => m.Description.GuestAddress == r.GuestAddress
            && m.Description.UserAddress == r.UserAddress && m.Description.Size == r.Size);
        if (victim is null)
            return Fail($"no region matches {r}");
        SwapMemory(_memory.Regions.Where(m => m != victim).ToList(), $"memory region removed: {r}", logRegions: false);
        return Verdict.Done;
    }

    /// <summary>
    /// Installs a new memory table: stops the running rings, swaps, unmaps what left the table,
    /// and restarts the rings over the new table at the indices they stopped at.
    /// </summary>
    private void SwapMemory(List<MappedRegion> regions, string what, bool logRegions = true)
    {
        var running = StopRunning();
        var old = _memory.Replace(regions);
        foreach (var m in old)
        {
            if (!regions.Contains(m))
                m.Dispose();
        }
        _log.Info(what);
        if (logRegions)
        {
            for (var i = 0; i < regions.Count; i++)
                _log.Info($"  region {i}: {regions[i].Description}");
        }
        if (!_unsealedWarned && regions.FirstOrDefault(m => !m.SizeSealed) is { } unsealed)
        {
            _unsealedWarned = true;
            _log.Warn($"memory region {unsealed.Description}: its file is not sealed against shrinking (F_SEAL_SHRINK); "
                + "if the front-end truncates it, this process dies of SIGBUS on the next access. "
                + "QEMU's memory-backend-memfd seals by default (seal=on)");
        }
        Restart(running);
    }

    /// <summary>Stops every started ring; returns those to restart (a ring that needs a device reset stays stopped).</summary>
    private List<Vring> StopRunning()
    {
        var running = _vrings.Where(v => v.Started).ToList();
        foreach (var v in running)
            v.Stop();
        return running.Where(v => !v.Failed).ToList();
    }

    private void Restart(List<Vring> rings)
    {
        foreach (var v in rings)
        {
            if (!TryStart(v, out var error))
                _log.Error($"queue {v.Index}: not restarted: {error}");
        }
    }

    private void Requeue(string why)
    {
        _log.Debug($"restarting running queues: {why}");
        Restart(StopRunning());
    }
}
