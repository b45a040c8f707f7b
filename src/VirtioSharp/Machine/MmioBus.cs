using VirtioSharp.Mmio;

namespace VirtioSharp.Machine;

/// <summary>The machine's MMIO address space: loads and stores are routed to the device mapped there.</summary>
public sealed class MmioBus
{
    private readonly List<(ulong Base, IMmioHandler Handler)> _devices = [];

    public void Map(ulong baseAddress, IMmioHandler handler)
    {
        foreach (var (b, h) in _devices)
        {
            if (baseAddress < b + h.Size && b < baseAddress + handler.Size)
                throw new ArgumentException($"MMIO range at 0x{baseAddress:x} overlaps the device at 0x{b:x}");
        }
        _devices.Add((baseAddress, handler));
    }

    public uint Read(ulong address, int width = 4)
    {
        var (h, offset) = Find(address);
        return h is null ? 0 : h.Read(offset, width);   // unmapped reads return 0, like open bus
    }

    public void Write(ulong address, uint value, int width = 4)
    {
        var (h, offset) = Find(address);
        h?.Write(offset, value, width);                  // unmapped writes are dropped
    }

    private (IMmioHandler? Handler, uint Offset) Find(ulong address)
    {
        foreach (var (b, h) in _devices)
        {
            if (address >= b && address - b < h.Size)
                return (h, (uint)(address - b));
        }
        return (null, 0);
    }
}
