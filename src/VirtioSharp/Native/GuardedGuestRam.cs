using System.Runtime.InteropServices;
using VirtioSharp.Memory;

namespace VirtioSharp.Native;

/// <summary>
/// Guest RAM fenced by guard pages, for fuzzing and tests: one PROT_NONE reservation in which
/// only the regions are made readable and writable. Host layout:
/// <c>guard | region 0 | guard | region 1 | ... | guard</c>. An access one byte before, after or
/// between regions faults at once (SIGSEGV ends the process) instead of quietly reading or
/// corrupting the host's own memory. The regions are contiguous in guest-physical space but
/// apart in host space, so a buffer that straddles two regions (which a translation must never
/// allow) also lands on a guard page.
/// </summary>
public sealed class GuardedGuestRam : IDisposable
{
    private readonly Reservation _reservation;
    private readonly nint[] _hosts;

    public GuardedGuestRam(ulong guestBase, ulong regionSize, int regionCount = 1, ulong guardSize = 64 << 10)
    {
        var page = (ulong)Environment.SystemPageSize;
        if (regionSize == 0 || regionSize % page != 0 || guardSize == 0 || guardSize % page != 0)
            throw new ArgumentOutOfRangeException(nameof(regionSize), $"region and guard sizes must be non-zero multiples of the page size ({page})");
        if (regionCount is < 1 or > 64)
            throw new ArgumentOutOfRangeException(nameof(regionCount), "1..64 regions");
        if (regionSize > long.MaxValue / 128 || guardSize > long.MaxValue / 128)
            throw new ArgumentOutOfRangeException(nameof(regionSize), "region or guard too large");
        var guestSize = regionSize * (ulong)regionCount;
        if (guestBase + (guestSize - 1) < guestBase)
            throw new ArgumentOutOfRangeException(nameof(guestBase), "the guest range wraps the address space");
        var total = guardSize * (ulong)(regionCount + 1) + guestSize;

        _reservation = Reservation.Create((nuint)total);
        _hosts = new nint[regionCount];
        var regions = new GuestRegion[regionCount];
        var guards = new (nint, ulong)[regionCount + 1];
        for (var i = 0; i < regionCount; i++)
        {
            var offset = guardSize * (ulong)(i + 1) + regionSize * (ulong)i;
            var host = _reservation.Address + (nint)offset;
            if (Interop.MProtect(host, (nuint)regionSize, Interop.PROT_READ | Interop.PROT_WRITE) != 0)
            {
                var error = NativeCallException.FromLastError("mprotect");
                _reservation.Dispose();
                throw error;
            }
            _hosts[i] = host;
            regions[i] = new GuestRegion(guestBase + regionSize * (ulong)i, regionSize, host);
            guards[i] = (host - (nint)guardSize, guardSize);
        }
        guards[regionCount] = (_hosts[^1] + (nint)regionSize, guardSize);

        GuestBase = guestBase;
        RegionSize = regionSize;
        RegionCount = regionCount;
        GuardSize = guardSize;
        Guards = guards;
        Memory = new GuestMemory(regions);
    }

    /// <summary>Guest-physical address of the first byte of region 0.</summary>
    public ulong GuestBase { get; }
    /// <summary>Guest-physical address one past the last byte of the last region.</summary>
    public ulong GuestEnd => GuestBase + RegionSize * (ulong)RegionCount;
    public ulong RegionSize { get; }
    public int RegionCount { get; }
    public ulong GuardSize { get; }
    public GuestMemory Memory { get; }
    /// <summary>Host ranges that fault on any access: before, between and after the regions.</summary>
    public IReadOnlyList<(nint Address, ulong Length)> Guards { get; }

    /// <summary>Host address of region <paramref name="index"/>.</summary>
    public nint HostAddress(int index) => _hosts[index];

    /// <summary>Region <paramref name="index"/> as a span (regions under 2 GiB).</summary>
    public unsafe Span<byte> Region(int index) => new((void*)_hosts[index], checked((int)RegionSize));

    /// <summary>Guest-physical address of the first byte of region <paramref name="index"/>.</summary>
    public ulong RegionGuestAddress(int index) => GuestBase + RegionSize * (ulong)index;

    public void Dispose() => _reservation.Dispose();

    /// <summary>The whole reservation: guards and regions, unmapped as one.</summary>
    private sealed class Reservation : SafeHandle
    {
        private nuint _length;

        private Reservation() : base(0, ownsHandle: true) { }

        public override bool IsInvalid => handle == 0;
        public nint Address => handle;

        public static Reservation Create(nuint length)
        {
            var r = new Reservation();
            var address = Interop.MMapAnonymous(0, length, Interop.PROT_NONE,
                Interop.MAP_PRIVATE | Interop.MAP_ANONYMOUS | Interop.MAP_NORESERVE, -1, 0);
            if (address == Interop.MAP_FAILED)
            {
                r.SetHandleAsInvalid();
                throw NativeCallException.FromLastError("mmap");
            }
            r.SetHandle(address);
            r._length = length;
            return r;
        }

        protected override bool ReleaseHandle() => Interop.MUnmap(handle, _length) == 0;
    }
}
