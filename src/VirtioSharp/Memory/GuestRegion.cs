namespace VirtioSharp.Memory;

/// <summary>
/// One contiguous piece of guest-physical memory backed by host memory.
/// <see cref="UserAddress"/> is the address the front-end process sees the region at
/// (vhost-user sends ring addresses in that space); it equals the guest-physical
/// address for the in-process machine.
/// </summary>
public readonly record struct GuestRegion(ulong GuestPhysicalAddress, ulong Size, nint HostAddress, ulong UserAddress)
{
    public GuestRegion(ulong guestPhysicalAddress, ulong size, nint hostAddress)
        : this(guestPhysicalAddress, size, hostAddress, guestPhysicalAddress) { }

    /// <summary>True when [address, address + length) lies inside this region (overflow-safe).</summary>
    public bool Contains(ulong address, ulong length) =>
        address >= GuestPhysicalAddress
        && address - GuestPhysicalAddress <= Size
        && length <= Size - (address - GuestPhysicalAddress);

    public bool ContainsUser(ulong address, ulong length) =>
        address >= UserAddress
        && address - UserAddress <= Size
        && length <= Size - (address - UserAddress);

    /// <summary>True when the two regions share a guest-physical or a user address.</summary>
    public bool Overlaps(GuestRegion other) =>
        RangesOverlap(GuestPhysicalAddress, Size, other.GuestPhysicalAddress, other.Size)
        || RangesOverlap(UserAddress, Size, other.UserAddress, other.Size);

    private static bool RangesOverlap(ulong a, ulong aLen, ulong b, ulong bLen) =>
        aLen != 0 && bLen != 0 && (a < b ? b - a < aLen : a - b < bLen);
}
