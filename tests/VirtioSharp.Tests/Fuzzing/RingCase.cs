using FsCheck;
using FsCheck.Fluent;

namespace VirtioSharp.Tests.Fuzzing;

/// <summary>Where the three parts of the ring go in a random case.</summary>
internal enum RingPlacement
{
    /// <summary>One block, as a driver lays it out (SplitQueueLayout).</summary>
    Contiguous,
    /// <summary>Each part anywhere in RAM, aligned, possibly overlapping another.</summary>
    Scattered,
    /// <summary>The used ring ends on the last byte of RAM, the descriptor table on the last byte of region 0.</summary>
    AtRegionEnd,
    /// <summary>A part straddles the boundary between two regions (must be refused).</summary>
    Straddling,
    /// <summary>A part breaks the 16/2/4 alignment of 2.7 (must be refused).</summary>
    Misaligned,
    /// <summary>Addresses from the interesting-address table: outside RAM, in guard pages, near 2^64.</summary>
    Anywhere,
}

/// <summary>What one mutation of a recorded valid ring changes.</summary>
internal enum MutationKind
{
    FlipBit,
    DescAddress,
    DescLength,
    DescFlags,
    DescNext,
    AvailIdx,
    AvailEntry,
    SwapAvail,
    SwapDescriptors,
    DuplicateHead,
    HeaderType,
    HeaderSector,
    SegmentField,
    MakeLoop,
    RandomBytes,
    ToggleFeature,
    UsedIndex,
}

/// <summary>One mutation: its kind, which field (Target modulo the candidates), which value (Value picks from a table or is the value).</summary>
internal readonly record struct Mutation(MutationKind Kind, int Target, int Value)
{
    public override string ToString() => $"{Kind}({Target % 1000},{Value})";
}

/// <summary>
/// One device-half fuzz case. Random cases fill RAM and build rings from the interesting-value
/// tables (<see cref="Mutated"/> false); mutated cases start from a ring our own driver queue
/// recorded with valid requests and apply <see cref="Mutations"/>. Bulk bytes come from
/// <see cref="Seed"/>.
/// </summary>
internal sealed record RingCase(bool Mutated, int Layout, int SizeLog2, ulong FeatureMask, int Target, RingPlacement Placement,
    ushort StartIndex, ushort UsedOffset, int Chains, int Passes, ulong Seed, Mutation[] Mutations)
{
    public int Index { get; init; }

    public override string ToString() => Mutated
        ? $"case {Index}: mutated recording (seed 0x{Seed:x}), target {Target}, {Passes} pass(es), mutations [{string.Join(", ", Mutations)}]"
        : $"case {Index}: random, layout {Layout}, queue size {1 << SizeLog2}, {Placement}, features mask 0x{FeatureMask:x}, target {Target}, "
          + $"start {StartIndex} (+{UsedOffset} used), {Chains} chains, {Passes} pass(es), seed 0x{Seed:x}";
}

/// <summary>FsCheck generators for <see cref="RingCase"/>.</summary>
internal static class RingCaseGen
{
    private static readonly Gen<int> AnyInt = Gen.Choose(int.MinValue, int.MaxValue);

    public static readonly Gen<ulong> U64 =
        from hi in AnyInt
        from lo in AnyInt
        select (ulong)(uint)hi << 32 | (uint)lo;

    /// <summary>Start indices: 0, just below the 16-bit wrap (so the case wraps), or anywhere.</summary>
    public static readonly Gen<ushort> StartIndex = Gen.Frequency(
        (4, Gen.Constant((ushort)0)),
        (3, Gen.Choose(65_500, 65_535).Select(i => (ushort)i)),
        (3, Gen.Choose(0, 65_535).Select(i => (ushort)i)));

    public static readonly Gen<Mutation> Mutation =
        from kind in Gen.Elements(Enum.GetValues<MutationKind>())
        from target in Gen.Choose(0, int.MaxValue)
        from value in Gen.Choose(0, int.MaxValue)
        select new Mutation(kind, target, value);

    public static readonly Gen<RingPlacement> Placement = Gen.Frequency(
        (6, Gen.Constant(RingPlacement.Contiguous)),
        (2, Gen.Constant(RingPlacement.Scattered)),
        (2, Gen.Constant(RingPlacement.AtRegionEnd)),
        (1, Gen.Constant(RingPlacement.Straddling)),
        (1, Gen.Constant(RingPlacement.Misaligned)),
        (1, Gen.Constant(RingPlacement.Anywhere)));

    public static Gen<RingCase> Case(int layouts, int targets) =>
        from mutated in Gen.Frequency((2, Gen.Constant(false)), (3, Gen.Constant(true)))
        from layout in Gen.Choose(0, layouts - 1)
        from sizeLog2 in Gen.Frequency((3, Gen.Choose(0, 4)), (6, Gen.Choose(5, 8)), (1, Gen.Choose(9, 10)))
        from mask in U64
        from target in Gen.Choose(0, targets - 1)
        from placement in Placement
        from start in StartIndex
        from usedOffset in Gen.Frequency((9, Gen.Constant((ushort)0)), (1, Gen.Choose(1, 65_535).Select(i => (ushort)i)))
        from chains in Gen.Frequency((1, Gen.Constant(0)), (6, Gen.Choose(1, 8)), (3, Gen.Choose(9, 70)))
        from passes in Gen.Frequency((6, Gen.Constant(1)), (3, Gen.Constant(2)), (1, Gen.Constant(3)))
        from seed in U64
        from count in Gen.Frequency((3, Gen.Choose(1, 2)), (2, Gen.Choose(3, 8)))
        from mutations in Gen.ArrayOf(Mutation, count)
        select new RingCase(mutated, layout, sizeLog2, mask, target, placement, start, usedOffset, chains, passes, seed, mutations);
}
