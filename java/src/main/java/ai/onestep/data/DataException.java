package ai.onestep.data;

/** A data set that cannot be read; the message names the file or folder and what is wrong. */
public class DataException extends RuntimeException {
    public DataException(String message) {
        super(message);
    }

    public DataException(String message, Throwable cause) {
        super(message, cause);
    }
}
