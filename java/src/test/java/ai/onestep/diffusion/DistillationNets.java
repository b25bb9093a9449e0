package ai.onestep.diffusion;

import ai.onestep.model.Init;
import ai.onestep.model.StudentInit;
import ai.onestep.model.UNet;

/** The distillation tests' starting point, written once. */
public final class DistillationNets {
    private DistillationNets() {
    }

    /**
     * A teacher with PyTorch's default initialization (seed 1), a student initialized the same way (seed 2) and then
     * sliced from the teacher where the shapes allow, and the target network a copy of the student.
     */
    public static void randomTeacherSlicedStudent(UNet teacher, UNet student, UNet target) {
        Init.pytorchDefault(teacher, 1);
        Init.pytorchDefault(student, 2);
        StudentInit.sliceFrom(teacher, student);
        target.parameters().copyValuesFrom(student.parameters());
    }
}
