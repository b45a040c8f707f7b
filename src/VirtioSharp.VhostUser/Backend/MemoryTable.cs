using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>One region of the front-end's memory, mapped into this process.</summary>
internal sealed class MappedRegion(MemoryRegionDescription description, Mapping mapping, bool sizeSealed) : IDisposable
{
    public MemoryRegionDescription Description { get; } = description;
    public Mapping Mapping { get; } = mapping;
    /// <summary>Its file is sealed against shrinking (F_SEAL_SHRINK), so no access can fault past the end later.</summary>
    public bool SizeSealed { get; } = sizeSealed;
    public GuestRegion GuestRegion => new(Description.GuestAddress, Description.Size, Mapping.Address, Description.UserAddress);

    public void Dispose() => Mapping.Dispose();
}

/// <summary>
/// The memory table the front-end sent (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG): checks each
/// region before mapping it, maps it from its descriptor at its mmap offset, and publishes an
/// immutable <see cref="GuestMemory"/> over all of them. Replacing the table hands back the old
/// regions; the caller unmaps them once no queue uses them.
/// </summary>
internal sealed class MemoryTable : IDisposable
{
    /// <summary>Answer to GET_MAX_MEM_SLOTS.</summary>
    public const int MaxSlots = 32;

    private List<MappedRegion> _regions = [];

    public GuestMemory Memory { get; private set; } = GuestMemory.Empty;
    public IReadOnlyList<MappedRegion> Regions => _regions;
    public bool IsEmpty => _regions.Count == 0;

    /// <summary>Checks one region's numbers on their own: non-empty, no address wraps.</summary>
    public static string? CheckShape(MemoryRegionDescription r)
    {
        if (r.Size == 0)
            return $"region {r} is empty";
        if (r.GuestAddress + (r.Size - 1) < r.GuestAddress)
            return $"region {r}: guest range wraps the address space";
        if (r.UserAddress + (r.Size - 1) < r.UserAddress)
            return $"region {r}: user range wraps the address space";
        if (r.MmapOffset + r.Size < r.MmapOffset || r.MmapOffset + r.Size > long.MaxValue)
            return $"region {r}: mmap offset + size overflows";
        return null;
    }

    /// <summary>Checks that no two regions share a guest-physical or a user address.</summary>
    public static string? CheckOverlaps(IReadOnlyList<MemoryRegionDescription> regions)
    {
        for (var i = 0; i < regions.Count; i++)
        {
            for (var j = 0; j < i; j++)
            {
                var a = new GuestRegion(regions[i].GuestAddress, regions[i].Size, 0, regions[i].UserAddress);
                var b = new GuestRegion(regions[j].GuestAddress, regions[j].Size, 0, regions[j].UserAddress);
                if (a.Overlaps(b))
                    return $"regions overlap: {regions[j]} and {regions[i]}";
            }
        }
        return null;
    }

    /// <summary>
    /// Maps one region from <paramref name="fd"/>. The descriptor must be a regular file (memfd,
    /// hugetlbfs, tmpfs) at least offset + size long: mapping past its end would turn a guest
    /// access into SIGBUS. Returns null with a reason on failure. Does not keep <paramref name="fd"/>.
    /// </summary>
    public static MappedRegion? Map(MemoryRegionDescription r, SafeFdHandle fd, out string? error)
    {
        error = CheckShape(r);
        if (error != null)
            return null;
        try
        {
            var kind = FileStatus.KindOf(fd, out var fileSize);
            if (kind != FileKind.Regular)
            {
                error = $"region {r}: its descriptor is not a shared-memory file ({kind})";
                return null;
            }
            if (fileSize < r.MmapOffset + r.Size)
            {
                error = $"region {r}: needs {r.MmapOffset + r.Size} bytes but its file holds {fileSize}";
                return null;
            }
            return new MappedRegion(r, Mapping.Map(fd, r.MmapOffset, r.Size), MemFd.IsSizeSealed(fd));
        }
        catch (Exception e) when (e is NativeCallException or ArgumentException)
        {
            error = $"region {r}: {e.Message}";
            return null;
        }
    }

    /// <summary>Makes <paramref name="regions"/> the table; returns the regions it replaced (still mapped).</summary>
    public List<MappedRegion> Replace(List<MappedRegion> regions)
    {
        var guest = new GuestRegion[regions.Count];
        for (var i = 0; i < guest.Length; i++)
            guest[i] = regions[i].GuestRegion;
        var memory = new GuestMemory(guest); // the caller checked overlaps; this re-checks
        var old = _regions;
        _regions = regions;
        Memory = memory;
        return old;
    }

    public void Dispose()
    {
        foreach (var r in Replace([]))
            r.Dispose();
    }
}
