using System.Globalization;
using System.Runtime.InteropServices;
using VirtioSharp.Native;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>
/// The guard pages are really there: the kernel refuses to copy from them (EFAULT, where a load
/// from managed code would end the process with SIGSEGV), /proc/self/maps shows them with no
/// access, and guest memory translates each region up to its last byte but never across two.
/// </summary>
public sealed class GuardedGuestRamTests
{
    private const int EFAULT = 14;

    [Fact]
    public void Regions_are_readable_and_writable_up_to_their_last_byte()
    {
        using var ram = new GuardedGuestRam(0x8000_0000, 64 << 10, regionCount: 2, guardSize: 16 << 10);
        for (var i = 0; i < ram.RegionCount; i++)
        {
            var span = ram.Region(i);
            span[0] = 1;
            span[^1] = 2;
            Assert.Equal(1, span[0]);
            Assert.Equal(2, span[^1]);
            Assert.True(ram.Memory.TryTranslate(ram.RegionGuestAddress(i) + ram.RegionSize - 1, 1, out var last));
            Assert.Equal(ram.HostAddress(i) + (nint)ram.RegionSize - 1, last);
        }
        // Guest-contiguous, host-apart: one byte across the boundary must not translate.
        Assert.False(ram.Memory.TryTranslate(ram.RegionGuestAddress(1) - 1, 2, out _));
        Assert.False(ram.Memory.TryTranslate(ram.GuestBase - 1, 1, out _));
        Assert.False(ram.Memory.TryTranslate(ram.GuestEnd, 1, out _));
    }

    [Fact]
    public unsafe void Guard_pages_fault_on_access()
    {
        using var ram = new GuardedGuestRam(0x8000_0000, 64 << 10, regionCount: 2, guardSize: 16 << 10);
        using var sink = EventFd.Create();
        Assert.Equal(3, ram.Guards.Count);
        foreach (var (address, length) in ram.Guards)
        {
            // write(2) copies 8 bytes from the address; the kernel reports EFAULT for a page we cannot read.
            foreach (var probe in new[] { address, address + (nint)length - 8 })
            {
                Assert.Equal(-1, Interop.Write(sink.Handle, (void*)probe, 8));
                Assert.Equal(EFAULT, Marshal.GetLastPInvokeError());
            }
        }
        for (var i = 0; i < ram.RegionCount; i++)
        {
            ram.Region(i).Clear();
            Assert.Equal(8, Interop.Write(sink.Handle, (void*)(ram.HostAddress(i) + (nint)ram.RegionSize - 8), 8));
        }
    }

    [Fact]
    public void Process_map_shows_guards_without_access()
    {
        using var ram = new GuardedGuestRam(0x8000_0000, 64 << 10, regionCount: 2, guardSize: 16 << 10);
        var maps = File.ReadAllLines("/proc/self/maps").Select(ParseMapLine).ToList();
        foreach (var (address, length) in ram.Guards)
            Assert.Equal("---p", PermissionsAt(maps, (ulong)address, length));
        for (var i = 0; i < ram.RegionCount; i++)
            Assert.Equal("rw-p", PermissionsAt(maps, (ulong)ram.HostAddress(i), ram.RegionSize));
    }

    private static (ulong Start, ulong End, string Perms) ParseMapLine(string line)
    {
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var range = parts[0].Split('-');
        return (ulong.Parse(range[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture),
            ulong.Parse(range[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture), parts[1]);
    }

    /// <summary>The permissions of the one mapping that covers [start, start + length) wholly.</summary>
    private static string PermissionsAt(List<(ulong Start, ulong End, string Perms)> maps, ulong start, ulong length)
    {
        var covering = maps.Where(m => m.Start <= start && start + length <= m.End).ToList();
        Assert.Single(covering);
        return covering[0].Perms;
    }
}
