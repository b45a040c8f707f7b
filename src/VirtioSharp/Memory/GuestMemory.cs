using System.Runtime.CompilerServices;

namespace VirtioSharp.Memory;

/// <summary>
/// Maps guest-physical addresses to host memory. Immutable: a new memory table is a new
/// instance, so a queue that holds one keeps a consistent view until it re-translates.
/// Every guest-supplied address and length goes through <see cref="TryTranslate"/>,
/// which checks bounds with overflow-safe arithmetic and never throws.
/// </summary>
public sealed unsafe class GuestMemory
{
    private readonly GuestRegion[] _regions;

    public GuestMemory(params ReadOnlySpan<GuestRegion> regions)
    {
        for (var i = 0; i < regions.Length; i++)
        {
            var r = regions[i];
            if (r.Size == 0)
                throw new ArgumentException($"memory region {i} is empty");
            if (r.GuestPhysicalAddress + (r.Size - 1) < r.GuestPhysicalAddress || r.UserAddress + (r.Size - 1) < r.UserAddress)
                throw new ArgumentException($"memory region {i} wraps the address space");
            for (var j = 0; j < i; j++)
            {
                if (regions[j].Overlaps(r))
                    throw new ArgumentException($"memory regions {j} and {i} overlap");
            }
        }
        _regions = regions.ToArray();
    }

    public static GuestMemory Empty { get; } = new();

    public ReadOnlySpan<GuestRegion> Regions => _regions;

    /// <summary>Translates [address, address + length) to a host pointer; false if any byte lies outside one region.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryTranslate(ulong address, ulong length, out nint host)
    {
        var regions = _regions;
        for (var i = 0; i < regions.Length; i++)
        {
            ref readonly var r = ref regions[i];
            if (r.Contains(address, length))
            {
                host = r.HostAddress + (nint)(address - r.GuestPhysicalAddress);
                return true;
            }
        }
        host = 0;
        return false;
    }

    /// <summary>Translates a front-end virtual address (vhost-user ring addresses, 2.3 of vhost-user.rst) to a host pointer.</summary>
    public bool TryTranslateUser(ulong userAddress, ulong length, out nint host)
    {
        foreach (ref readonly var r in _regions.AsSpan())
        {
            if (r.ContainsUser(userAddress, length))
            {
                host = r.HostAddress + (nint)(userAddress - r.UserAddress);
                return true;
            }
        }
        host = 0;
        return false;
    }

    /// <summary>Converts a front-end virtual address to a guest-physical one.</summary>
    public bool TryUserToGuest(ulong userAddress, ulong length, out ulong guestPhysical)
    {
        foreach (ref readonly var r in _regions.AsSpan())
        {
            if (r.ContainsUser(userAddress, length))
            {
                guestPhysical = r.GuestPhysicalAddress + (userAddress - r.UserAddress);
                return true;
            }
        }
        guestPhysical = 0;
        return false;
    }

    public bool TryGetSpan(ulong address, uint length, out Span<byte> span)
    {
        if (TryTranslate(address, length, out var host))
        {
            span = new Span<byte>((void*)host, (int)Math.Min(length, int.MaxValue));
            return length <= int.MaxValue;
        }
        span = default;
        return false;
    }

    /// <summary>Span over guest memory for trusted callers (driver side); throws on a bad range.</summary>
    public Span<byte> GetSpan(ulong address, int length)
    {
        if (length < 0 || !TryTranslate(address, (ulong)length, out var host))
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{length} is outside guest memory");
        return new Span<byte>((void*)host, length);
    }

    public nint GetPointer(ulong address, ulong length)
    {
        if (!TryTranslate(address, length, out var host))
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{length} is outside guest memory");
        return host;
    }
}
