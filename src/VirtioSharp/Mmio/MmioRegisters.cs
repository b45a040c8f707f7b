namespace VirtioSharp.Mmio;

/// <summary>virtio-mmio register offsets, version 2 layout (4.2.2).</summary>
public static class MmioRegisters
{
    public const uint MagicValue = 0x000;
    public const uint Version = 0x004;
    public const uint DeviceId = 0x008;
    public const uint VendorId = 0x00c;
    public const uint DeviceFeatures = 0x010;
    public const uint DeviceFeaturesSel = 0x014;
    public const uint DriverFeatures = 0x020;
    public const uint DriverFeaturesSel = 0x024;
    public const uint QueueSel = 0x030;
    public const uint QueueNumMax = 0x034;
    public const uint QueueNum = 0x038;
    public const uint QueueReady = 0x044;
    public const uint QueueNotify = 0x050;
    public const uint InterruptStatus = 0x060;
    public const uint InterruptAck = 0x064;
    public const uint Status = 0x070;
    public const uint QueueDescLow = 0x080;
    public const uint QueueDescHigh = 0x084;
    public const uint QueueDriverLow = 0x090;
    public const uint QueueDriverHigh = 0x094;
    public const uint QueueDeviceLow = 0x0a0;
    public const uint QueueDeviceHigh = 0x0a4;
    public const uint ShmSel = 0x0ac;
    public const uint ShmLenLow = 0x0b0;
    public const uint ShmLenHigh = 0x0b4;
    public const uint ShmBaseLow = 0x0b8;
    public const uint ShmBaseHigh = 0x0bc;
    public const uint QueueReset = 0x0c0;
    public const uint ConfigGeneration = 0x0fc;
    public const uint Config = 0x100;

    public const uint Magic = 0x74726976;        // "virt" little-endian
    public const uint CurrentVersion = 2;        // 4.2.2: modern devices report 2
    public const uint VirtioSharpVendorId = 0x50485356; // "VSHP"
    public const uint RegionSize = 0x200;

    public const uint InterruptUsedBuffer = 1;   // 4.2.2: InterruptStatus bit 0
    public const uint InterruptConfigChange = 2; // 4.2.2: InterruptStatus bit 1

    public static string Name(uint offset) => offset switch
    {
        MagicValue => "MagicValue",
        Version => "Version",
        DeviceId => "DeviceID",
        VendorId => "VendorID",
        DeviceFeatures => "DeviceFeatures",
        DeviceFeaturesSel => "DeviceFeaturesSel",
        DriverFeatures => "DriverFeatures",
        DriverFeaturesSel => "DriverFeaturesSel",
        QueueSel => "QueueSel",
        QueueNumMax => "QueueNumMax",
        QueueNum => "QueueNum",
        QueueReady => "QueueReady",
        QueueNotify => "QueueNotify",
        InterruptStatus => "InterruptStatus",
        InterruptAck => "InterruptACK",
        Status => "Status",
        QueueDescLow => "QueueDescLow",
        QueueDescHigh => "QueueDescHigh",
        QueueDriverLow => "QueueDriverLow",
        QueueDriverHigh => "QueueDriverHigh",
        QueueDeviceLow => "QueueDeviceLow",
        QueueDeviceHigh => "QueueDeviceHigh",
        ConfigGeneration => "ConfigGeneration",
        >= Config => $"Config+0x{offset - Config:x}",
        _ => $"0x{offset:x3}",
    };
}

/// <summary>Something that answers loads and stores on the MMIO bus.</summary>
public interface IMmioHandler
{
    uint Size { get; }
    uint Read(uint offset, int width);
    void Write(uint offset, uint value, int width);
}
